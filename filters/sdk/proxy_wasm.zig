//! edgegw's Zig proxy-wasm SDK (ABI v0.2.1). Import as `@import("proxy_wasm")` and call
//! `proxy_wasm.plugin(MyRoot)` from a `comptime` block. See docs/filters/sdk.md.
const std = @import("std");

pub const abi = @import("abi.zig");
pub const memory = @import("memory.zig");
pub const host = @import("host.zig");
pub const shared = @import("shared.zig");
pub const util = @import("util.zig");
const dispatch = @import("dispatch.zig");

pub const Action = abi.Action;
pub const Error = abi.Error;
pub const LogLevel = abi.LogLevel;
pub const MapType = abi.MapType;
pub const BufferType = abi.BufferType;
pub const StreamType = abi.StreamType;
pub const MetricType = abi.MetricType;
pub const Header = host.Header;

pub const allocator = memory.allocator;
pub const scratch = memory.scratch;

// Flat re-exports so filters read `pw.log(...)`, `pw.getProperty(...)`.
pub const log = host.log;
pub const currentTimeNanos = host.currentTimeNanos;
pub const currentTimeMillis = host.currentTimeMillis;
pub const setTickPeriod = host.setTickPeriod;
pub const getBuffer = host.getBuffer;
pub const setBuffer = host.setBuffer;
pub const bufferSize = host.bufferSize;
pub const pluginConfiguration = host.pluginConfiguration;
pub const vmConfiguration = host.vmConfiguration;
pub const getProperty = host.getProperty;
pub const getPropertyInt = host.getPropertyInt;
pub const setProperty = host.setProperty;
pub const peerTrusted = host.peerTrusted;
pub const continueStream = host.continueStream;
pub const closeStream = host.closeStream;
pub const sendLocalResponse = host.sendLocalResponse;
pub const setEffectiveContext = host.setEffectiveContext;
pub const httpCall = shared.httpCall;
pub const httpCallResponseHeaders = shared.httpCallResponseHeaders;
pub const httpCallResponseBody = shared.httpCallResponseBody;
pub const httpCallResponseStatus = shared.httpCallResponseStatus;
pub const getSharedData = shared.getSharedData;
pub const setSharedData = shared.setSharedData;
pub const SharedValue = shared.SharedValue;
pub const registerQueue = shared.registerQueue;
pub const resolveQueue = shared.resolveQueue;
pub const enqueue = shared.enqueue;
pub const dequeue = shared.dequeue;
pub const Metric = shared.Metric;
pub const json = util.json;
pub const sendProblem = util.sendProblem;
pub const murmur3 = util.murmur3;
pub const cookieValue = util.cookieValue;
pub const fmt = util.fmt;

/// Typed access to one header map: `pw.request_headers.get("x-user")`.
pub fn HeaderMap(comptime map: MapType) type {
    return struct {
        pub fn get(name: []const u8) Error!?[]const u8 {
            return host.getHeader(map, name);
        }
        pub fn add(name: []const u8, value: []const u8) Error!void {
            return host.addHeader(map, name, value);
        }
        pub fn replace(name: []const u8, value: []const u8) Error!void {
            return host.replaceHeader(map, name, value);
        }
        pub fn remove(name: []const u8) Error!void {
            return host.removeHeader(map, name);
        }
        pub fn pairs() Error![]Header {
            return host.getHeaders(map);
        }
        pub fn setPairs(headers: []const Header) Error!void {
            return host.setHeaders(map, headers);
        }
    };
}

pub const request_headers = HeaderMap(.request_headers);
pub const request_trailers = HeaderMap(.request_trailers);
pub const response_headers = HeaderMap(.response_headers);
pub const response_trailers = HeaderMap(.response_trailers);
pub const http_call_response_headers = HeaderMap(.http_call_response_headers);

/// Exports the ABI entry points for `Root` (call inside `comptime { ... }` in main.zig).
pub fn plugin(comptime Root: type) void {
    dispatch.Entries(Root).exportAll();
}

/// A panic handler that traps without formatting (keeps modules small); wire it with
/// `pub const panic = proxy_wasm.panic;` in main.zig.
pub const panic = std.debug.no_panic;
