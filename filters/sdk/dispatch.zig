//! The proxy_on_* entry points, dispatching to a comptime-checked root context type.
//!
//! `Root` is the user's plugin (root) context; `Root.Http`, when declared, is the per-stream
//! HTTP context. Every method is optional; see docs/filters/sdk.md for signatures.
const std = @import("std");
const abi = @import("abi.zig");
const memory = @import("memory.zig");
const host = @import("host.zig");
const shared = @import("shared.zig");

pub const Action = abi.Action;

fn logFailure(where: []const u8, err: anyerror) void {
    host.log(.err, "{s} failed: {s}", .{ where, @errorName(err) });
}

/// Turns a callback's result (T or error!T) into T, logging errors and using `fallback`.
fn settle(comptime T: type, where: []const u8, result: anytype, fallback: T) T {
    const R = @TypeOf(result);
    if (@typeInfo(R) == .error_union) {
        return result catch |err| {
            logFailure(where, err);
            return fallback;
        };
    }
    return result;
}

/// Stream callbacks: an error answers 500 problem+json so a failing filter fails closed.
fn settleAction(where: []const u8, result: anytype) Action {
    const R = @TypeOf(result);
    if (@typeInfo(R) == .error_union) {
        return result catch |err| {
            logFailure(where, err);
            const body = "{\"type\":\"about:blank\",\"title\":\"Internal Server Error\",\"status\":500,\"detail\":\"filter error\"}";
            const hdrs = [_]host.Header{.{ .name = "content-type", .value = "application/problem+json" }};
            host.sendLocalResponse(500, "filter_error", body, &hdrs, -1) catch {};
            return .@"continue";
        };
    }
    return result;
}

pub fn Entries(comptime Root: type) type {
    const has_http = @hasDecl(Root, "Http");
    const Http = if (has_http) Root.Http else void;

    return struct {
        const Slot = union(enum) { root: *Root, http: *Http };
        var contexts: std.AutoHashMapUnmanaged(u32, Slot) = .empty;

        fn begin(context_id: u32) void {
            memory.enter();
            shared.current_context = context_id;
        }

        fn end() void {
            memory.leave();
        }

        fn rootOf(id: u32) ?*Root {
            const slot = contexts.get(id) orelse return null;
            return switch (slot) {
                .root => |r| r,
                .http => null,
            };
        }

        fn httpOf(id: u32) ?*Http {
            const slot = contexts.get(id) orelse return null;
            return switch (slot) {
                .http => |h| h,
                .root => null,
            };
        }

        /// An allocation failing here leaves the stream without a context: its stream
        /// callbacks then trap (`noContext`) rather than let it through.
        fn onContextCreate(id: u32, parent: u32) callconv(.c) void {
            begin(id);
            defer end();
            contexts.ensureUnusedCapacity(memory.allocator, 1) catch return;
            if (parent == 0) {
                const r = memory.allocator.create(Root) catch return;
                r.* = if (@hasDecl(Root, "init")) Root.init(id) else .{};
                contexts.putAssumeCapacity(id, .{ .root = r });
                return;
            }
            if (!has_http) return; // background plugin: no stream contexts
            const parent_root = rootOf(parent) orelse return;
            const h = memory.allocator.create(Http) catch return;
            h.* = Http.init(parent_root, id);
            contexts.putAssumeCapacity(id, .{ .http = h });
        }

        fn onVmStart(id: u32, size: usize) callconv(.c) bool {
            begin(id);
            defer end();
            const r = rootOf(id) orelse return false;
            if (!@hasDecl(Root, "onVmStart")) return true;
            return settle(bool, "onVmStart", r.onVmStart(size), false);
        }

        fn onConfigure(id: u32, size: usize) callconv(.c) bool {
            begin(id);
            defer end();
            const r = rootOf(id) orelse return false;
            if (!@hasDecl(Root, "onConfigure")) return true;
            return settle(bool, "onConfigure", r.onConfigure(size), false);
        }

        fn onTick(id: u32) callconv(.c) void {
            begin(id);
            defer end();
            const r = rootOf(id) orelse return;
            if (@hasDecl(Root, "onTick")) settle(void, "onTick", r.onTick(), {});
        }

        fn onQueueReady(id: u32, queue_id: u32) callconv(.c) void {
            begin(id);
            defer end();
            const r = rootOf(id) orelse return;
            if (@hasDecl(Root, "onQueueReady")) settle(void, "onQueueReady", r.onQueueReady(queue_id), {});
        }

        fn onHttpCallResponse(id: u32, token: u32, n_headers: usize, body_size: usize, n_trailers: usize) callconv(.c) void {
            const target = shared.takeCallout(token) orelse id;
            begin(target);
            defer end();
            if (has_http) {
                if (httpOf(target)) |h| {
                    // The stream's own hostcalls (headers, local responses) need it effective.
                    host.setEffectiveContext(target) catch return;
                    if (@hasDecl(Http, "onHttpCallResponse"))
                        settle(void, "onHttpCallResponse", h.onHttpCallResponse(token, n_headers, body_size, n_trailers), {});
                    return;
                }
            }
            const r = rootOf(target) orelse return;
            if (@hasDecl(Root, "onHttpCallResponse"))
                settle(void, "onHttpCallResponse", r.onHttpCallResponse(token, n_headers, body_size, n_trailers), {});
        }

        /// A stream with no context: its creation failed (proxy_on_context_create could not
        /// allocate it, e.g. the VM is at its memory limit). Answering `continue` would let
        /// the request through without the filter (a jwt_auth would fail open): trap
        /// instead, so the host applies its failure policy (edgegw `on_error`, Envoy
        /// `fail_open`), which fails the request unless told otherwise.
        fn noContext(comptime method: []const u8, id: u32) noreturn {
            host.log(.critical, "{s}: stream context {d} does not exist (its creation failed)", .{ method, id });
            end(); // a trap skips the caller's `defer end()`: the scratch arena must still reset
            @trap();
        }

        /// The six stream entry points, one shape each: `Http.<method>(self, args...)` for
        /// an existing stream context, `continue` when Http does not declare the method.
        fn Stream(comptime method: []const u8) type {
            return struct {
                fn run(id: u32, args: anytype) Action {
                    begin(id);
                    defer end();
                    const h = httpOf(id) orelse noContext(method, id);
                    if (!@hasDecl(Http, method)) return .@"continue";
                    return settleAction(method, @call(.auto, @field(Http, method), .{h} ++ args));
                }

                /// Headers and body: (context id, size, end_of_stream).
                fn sized(id: u32, size: usize, eos: bool) callconv(.c) Action {
                    return run(id, .{ size, eos });
                }

                /// Trailers: (context id, number of trailers).
                fn counted(id: u32, n: usize) callconv(.c) Action {
                    return run(id, .{n});
                }
            };
        }

        fn onLog(id: u32) callconv(.c) void {
            begin(id);
            defer end();
            if (has_http) {
                if (httpOf(id)) |h| {
                    if (@hasDecl(Http, "onLog")) settle(void, "onLog", h.onLog(), {});
                }
            }
        }

        fn onDone(id: u32) callconv(.c) bool {
            begin(id);
            defer end();
            const slot = contexts.get(id) orelse return true;
            switch (slot) {
                .root => |r| if (@hasDecl(Root, "onDone")) return settle(bool, "onDone", r.onDone(), true),
                .http => |h| if (has_http and @hasDecl(Http, "onDone")) return settle(bool, "onDone", h.onDone(), true),
            }
            return true;
        }

        fn onDelete(id: u32) callconv(.c) void {
            begin(id);
            defer end();
            shared.dropCallouts(id);
            const kv = contexts.fetchRemove(id) orelse return;
            switch (kv.value) {
                .root => |r| {
                    if (@hasDecl(Root, "deinit")) r.deinit();
                    memory.allocator.destroy(r);
                },
                .http => |h| {
                    if (has_http and @hasDecl(Http, "deinit")) h.deinit();
                    memory.allocator.destroy(h);
                },
            }
        }

        fn abiVersion() callconv(.c) void {}

        pub fn exportAll() void {
            memory.exportAll();
            @export(&abiVersion, .{ .name = "proxy_abi_version_0_2_1" });
            @export(&onContextCreate, .{ .name = "proxy_on_context_create" });
            @export(&onVmStart, .{ .name = "proxy_on_vm_start" });
            @export(&onConfigure, .{ .name = "proxy_on_configure" });
            @export(&onTick, .{ .name = "proxy_on_tick" });
            @export(&onQueueReady, .{ .name = "proxy_on_queue_ready" });
            @export(&onHttpCallResponse, .{ .name = "proxy_on_http_call_response" });
            @export(&onLog, .{ .name = "proxy_on_log" });
            @export(&onDone, .{ .name = "proxy_on_done" });
            @export(&onDelete, .{ .name = "proxy_on_delete" });
            if (has_http) {
                @export(&Stream("onRequestHeaders").sized, .{ .name = "proxy_on_request_headers" });
                @export(&Stream("onRequestBody").sized, .{ .name = "proxy_on_request_body" });
                @export(&Stream("onRequestTrailers").counted, .{ .name = "proxy_on_request_trailers" });
                @export(&Stream("onResponseHeaders").sized, .{ .name = "proxy_on_response_headers" });
                @export(&Stream("onResponseBody").sized, .{ .name = "proxy_on_response_body" });
                @export(&Stream("onResponseTrailers").counted, .{ .name = "proxy_on_response_trailers" });
            }
        }
    };
}
