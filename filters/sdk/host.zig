//! Typed wrappers over the hostcalls. Every failure is an `Error` value; bytes the host
//! returns live in the scratch arena (valid until the current callback returns).
const std = @import("std");
const abi = @import("abi.zig");
const memory = @import("memory.zig");

pub const Error = abi.Error;
pub const MapType = abi.MapType;
pub const BufferType = abi.BufferType;
pub const StreamType = abi.StreamType;
pub const LogLevel = abi.LogLevel;
pub const MetricType = abi.MetricType;

/// One header (name, value). Names coming from the host are lower-case.
pub const Header = struct { name: []const u8, value: []const u8 };

fn bytes(ptr: ?[*]u8, len: usize) []const u8 {
    const p = ptr orelse return "";
    return p[0..len];
}

/// NOT_FOUND becomes null; other failures stay errors.
fn optional(status: u32, ptr: ?[*]u8, len: usize) Error!?[]const u8 {
    abi.check(status) catch |e| switch (e) {
        error.NotFound => return null,
        else => return e,
    };
    return bytes(ptr, len);
}

// ---- logging and time -------------------------------------------------------------------

pub fn logRaw(level: LogLevel, msg: []const u8) void {
    _ = abi.proxy_log(@backingInt(level), msg.ptr, msg.len);
}

/// Formats into scratch memory and logs; formatting failures log the format string itself.
pub fn log(level: LogLevel, comptime fmt: []const u8, args: anytype) void {
    const msg = std.fmt.allocPrint(memory.scratch(), fmt, args) catch fmt;
    logRaw(level, msg);
}

pub fn logLevel() Error!LogLevel {
    var level: u32 = 0;
    try abi.check(abi.proxy_get_log_level(&level));
    return std.enums.fromInt(LogLevel, level) orelse .info;
}

/// Nanoseconds since the Unix epoch, as the host sees it (0 if the host refuses).
pub fn currentTimeNanos() u64 {
    var t: u64 = 0;
    if (abi.proxy_get_current_time_nanoseconds(&t) != 0) return 0;
    return t;
}

pub fn currentTimeMillis() u64 {
    return currentTimeNanos() / std.time.ns_per_ms;
}

pub fn setTickPeriod(ms: u32) Error!void {
    try abi.check(abi.proxy_set_tick_period_milliseconds(ms));
}

pub fn setEffectiveContext(context_id: u32) Error!void {
    try abi.check(abi.proxy_set_effective_context(context_id));
}

pub fn done() Error!void {
    try abi.check(abi.proxy_done());
}

// ---- buffers ------------------------------------------------------------------------------

pub fn getBuffer(t: BufferType, start: usize, max_size: usize) Error!?[]const u8 {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    return optional(abi.proxy_get_buffer_bytes(@backingInt(t), start, max_size, &ptr, &len), ptr, len);
}

/// Replaces `size` bytes at `start` with `data` (start=0,size=0 prepends; start past the
/// end appends).
pub fn setBuffer(t: BufferType, start: usize, size: usize, data: []const u8) Error!void {
    try abi.check(abi.proxy_set_buffer_bytes(@backingInt(t), start, size, data.ptr, data.len));
}

pub fn bufferSize(t: BufferType) Error!usize {
    var len: usize = 0;
    var flags: u32 = 0;
    try abi.check(abi.proxy_get_buffer_status(@backingInt(t), &len, &flags));
    return len;
}

/// The plugin configuration (call from onConfigure with the size it was given).
pub fn pluginConfiguration(size: usize) Error![]const u8 {
    if (size == 0) return "";
    return (try getBuffer(.plugin_configuration, 0, size)) orelse "";
}

/// The VM configuration (call from onVmStart with the size it was given).
pub fn vmConfiguration(size: usize) Error![]const u8 {
    if (size == 0) return "";
    return (try getBuffer(.vm_configuration, 0, size)) orelse "";
}

// ---- header maps --------------------------------------------------------------------------

pub fn getHeader(map: MapType, name: []const u8) Error!?[]const u8 {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    return optional(abi.proxy_get_header_map_value(@backingInt(map), name.ptr, name.len, &ptr, &len), ptr, len);
}

pub fn addHeader(map: MapType, name: []const u8, value: []const u8) Error!void {
    try abi.check(abi.proxy_add_header_map_value(@backingInt(map), name.ptr, name.len, value.ptr, value.len));
}

/// Sets the header to exactly this value (adds it when missing).
pub fn replaceHeader(map: MapType, name: []const u8, value: []const u8) Error!void {
    try abi.check(abi.proxy_replace_header_map_value(@backingInt(map), name.ptr, name.len, value.ptr, value.len));
}

pub fn removeHeader(map: MapType, name: []const u8) Error!void {
    abi.check(abi.proxy_remove_header_map_value(@backingInt(map), name.ptr, name.len)) catch |e| switch (e) {
        error.NotFound => {},
        else => return e,
    };
}

/// All pairs of a map, in order, in scratch memory.
pub fn getHeaders(map: MapType) Error![]Header {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    const raw = (try optional(abi.proxy_get_header_map_pairs(@backingInt(map), &ptr, &len), ptr, len)) orelse return &.{};
    return decodeHeaders(memory.scratch(), raw);
}

pub fn setHeaders(map: MapType, headers: []const Header) Error!void {
    const buf = try encodeHeaders(memory.scratch(), headers);
    try abi.check(abi.proxy_set_header_map_pairs(@backingInt(map), buf.ptr, buf.len));
}

/// Decodes the ABI map encoding; malformed input is a ParseFailure, never a trap.
pub fn decodeHeaders(gpa: std.mem.Allocator, raw: []const u8) Error![]Header {
    if (raw.len < 4) return &.{};
    const n = std.mem.readInt(u32, raw[0..4], .little);
    if (n > raw.len / 8) return error.ParseFailure;
    const out = try gpa.alloc(Header, n);
    var data: usize = 4 + @as(usize, n) * 8;
    for (out, 0..) |*h, i| {
        const at = 4 + i * 8;
        const kl = std.mem.readInt(u32, raw[at..][0..4], .little);
        const vl = std.mem.readInt(u32, raw[at + 4 ..][0..4], .little);
        // Checked sums: release builds do not trap on overflow, so a huge length must not wrap.
        const end = std.math.add(usize, data, kl) catch return error.ParseFailure;
        const end2 = std.math.add(usize, end, vl) catch return error.ParseFailure;
        if (end2 > raw.len -| 2) return error.ParseFailure;
        h.name = raw[data .. data + kl];
        data += kl + 1;
        h.value = raw[data .. data + vl];
        data += vl + 1;
    }
    return out;
}

pub fn encodeHeaders(gpa: std.mem.Allocator, headers: []const Header) Error![]u8 {
    if (headers.len == 0) return &.{};
    var size: usize = 4 + headers.len * 8;
    for (headers) |h| size += h.name.len + h.value.len + 2;
    const buf = try gpa.alloc(u8, size);
    std.mem.writeInt(u32, buf[0..4], @intCast(headers.len), .little);
    var data: usize = 4 + headers.len * 8;
    for (headers, 0..) |h, i| {
        std.mem.writeInt(u32, buf[4 + i * 8 ..][0..4], @intCast(h.name.len), .little);
        std.mem.writeInt(u32, buf[8 + i * 8 ..][0..4], @intCast(h.value.len), .little);
        @memcpy(buf[data..][0..h.name.len], h.name);
        buf[data + h.name.len] = 0;
        data += h.name.len + 1;
        @memcpy(buf[data..][0..h.value.len], h.value);
        buf[data + h.value.len] = 0;
        data += h.value.len + 1;
    }
    return buf;
}

// ---- properties ---------------------------------------------------------------------------

fn joinPath(path: []const []const u8) Error![]u8 {
    return std.mem.join(memory.scratch(), "\x00", path);
}

/// A property by path segments, e.g. &.{ "source", "address" }; null when absent.
pub fn getProperty(path: []const []const u8) Error!?[]const u8 {
    const p = try joinPath(path);
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    return optional(abi.proxy_get_property(p.ptr, p.len, &ptr, &len), ptr, len);
}

/// An integer property (8 bytes little-endian); null when absent or of another shape.
pub fn getPropertyInt(path: []const []const u8) Error!?i64 {
    const v = (try getProperty(path)) orelse return null;
    if (v.len != 8) return null;
    return std.mem.readInt(i64, v[0..8], .little);
}

/// Whether the host vouches for the peer's headers: edgegw answers property
/// edgegw.peer_trusted (one byte, as Envoy serializes booleans) with 1 when the peer is in
/// `trusted_proxies`. A host without it (Envoy) leaves header trust to its own edge
/// config: true.
pub fn peerTrusted() Error!bool {
    const v = (try getProperty(&.{ "edgegw", "peer_trusted" })) orelse return true;
    return v.len == 1 and v[0] != 0;
}

pub fn setProperty(path: []const []const u8, value: []const u8) Error!void {
    const p = try joinPath(path);
    try abi.check(abi.proxy_set_property(p.ptr, p.len, value.ptr, value.len));
}

// ---- stream control -----------------------------------------------------------------------

pub fn continueStream(stream: StreamType) Error!void {
    try abi.check(abi.proxy_continue_stream(@backingInt(stream)));
}

pub fn closeStream(stream: StreamType) Error!void {
    try abi.check(abi.proxy_close_stream(@backingInt(stream)));
}

/// Answers the request from the filter; terminal for the stream (return `.continue`
/// right after it). grpc_status -1 means "not gRPC".
pub fn sendLocalResponse(status: u32, details: []const u8, body: []const u8, headers: []const Header, grpc_status: i32) Error!void {
    const hdrs = try encodeHeaders(memory.scratch(), headers);
    try abi.check(abi.proxy_send_local_response(status, details.ptr, details.len, body.ptr, body.len, hdrs.ptr, hdrs.len, grpc_status));
}
