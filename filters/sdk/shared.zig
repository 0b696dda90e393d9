//! HTTP callouts, shared data (with CAS), shared queues and metrics.
const std = @import("std");
const abi = @import("abi.zig");
const memory = @import("memory.zig");
const host = @import("host.zig");

const Error = abi.Error;
const Header = host.Header;

// ---- HTTP callouts ------------------------------------------------------------------------

/// The context the host is currently calling into (set by the dispatcher).
pub var current_context: u32 = 0;

const Pending = struct { token: u32, context_id: u32 };
var pending: std.ArrayList(Pending) = .empty;

/// Sends an HTTP request to the host cluster `upstream`. `headers` must include `:method`,
/// `:path` and `:authority`. The answer arrives as `onHttpCallResponse(token, ...)` on the
/// context that made the call (stream or root). timeout_ms 0 = no timeout.
pub fn httpCall(upstream: []const u8, headers: []const Header, body: []const u8, trailers: []const Header, timeout_ms: u32) Error!u32 {
    const h = try host.encodeHeaders(memory.scratch(), headers);
    const t = try host.encodeHeaders(memory.scratch(), trailers);
    var token: u32 = 0;
    try pending.ensureUnusedCapacity(memory.allocator, 1);
    try abi.check(abi.proxy_http_call(upstream.ptr, upstream.len, h.ptr, h.len, body.ptr, body.len, t.ptr, t.len, timeout_ms, &token));
    pending.appendAssumeCapacity(.{ .token = token, .context_id = current_context });
    return token;
}

/// Removes and returns the context that issued `token` (null for an unknown token).
pub fn takeCallout(token: u32) ?u32 {
    for (pending.items, 0..) |p, i| {
        if (p.token == token) {
            _ = pending.swapRemove(i);
            return p.context_id;
        }
    }
    return null;
}

/// Forgets callouts of a context that is going away (their answers are dropped).
pub fn dropCallouts(context_id: u32) void {
    var i: usize = 0;
    while (i < pending.items.len) {
        if (pending.items[i].context_id == context_id) {
            _ = pending.swapRemove(i);
        } else i += 1;
    }
}

/// Response headers of the callout being delivered (inside onHttpCallResponse).
pub fn httpCallResponseHeaders() Error![]Header {
    return host.getHeaders(.http_call_response_headers);
}

/// Body of the callout being delivered (inside onHttpCallResponse).
pub fn httpCallResponseBody(body_size: usize) Error![]const u8 {
    if (body_size == 0) return "";
    return (try host.getBuffer(.http_call_response_body, 0, body_size)) orelse "";
}

/// The `:status` of the callout being delivered as an integer (0 when missing).
pub fn httpCallResponseStatus() u32 {
    const v = (host.getHeader(.http_call_response_headers, ":status") catch return 0) orelse return 0;
    return std.fmt.parseInt(u32, v, 10) catch 0;
}

// ---- shared data --------------------------------------------------------------------------

pub const SharedValue = struct { value: []const u8, cas: u32 };

/// null when the key does not exist.
pub fn getSharedData(key: []const u8) Error!?SharedValue {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    var cas: u32 = 0;
    abi.check(abi.proxy_get_shared_data(key.ptr, key.len, &ptr, &len, &cas)) catch |e| switch (e) {
        error.NotFound => return null,
        else => return e,
    };
    const v: []const u8 = if (ptr) |p| p[0..len] else "";
    return .{ .value = v, .cas = cas };
}

/// cas 0 writes unconditionally; otherwise error.CasMismatch when someone wrote first.
pub fn setSharedData(key: []const u8, value: []const u8, cas: u32) Error!void {
    try abi.check(abi.proxy_set_shared_data(key.ptr, key.len, value.ptr, value.len, cas));
}

// ---- queues -------------------------------------------------------------------------------

pub fn registerQueue(name: []const u8) Error!u32 {
    var id: u32 = 0;
    try abi.check(abi.proxy_register_shared_queue(name.ptr, name.len, &id));
    return id;
}

/// null when no VM registered that queue.
pub fn resolveQueue(vm_id: []const u8, name: []const u8) Error!?u32 {
    var id: u32 = 0;
    abi.check(abi.proxy_resolve_shared_queue(vm_id.ptr, vm_id.len, name.ptr, name.len, &id)) catch |e| switch (e) {
        error.NotFound => return null,
        else => return e,
    };
    return id;
}

pub fn enqueue(queue_id: u32, data: []const u8) Error!void {
    try abi.check(abi.proxy_enqueue_shared_queue(queue_id, data.ptr, data.len));
}

/// null when the queue is empty.
pub fn dequeue(queue_id: u32) Error!?[]const u8 {
    var ptr: ?[*]u8 = null;
    var len: usize = 0;
    abi.check(abi.proxy_dequeue_shared_queue(queue_id, &ptr, &len)) catch |e| switch (e) {
        error.Empty => return null,
        else => return e,
    };
    return if (ptr) |p| p[0..len] else "";
}

// ---- metrics ------------------------------------------------------------------------------

pub const Metric = struct {
    id: u32,

    pub fn define(kind: abi.MetricType, name: []const u8) Error!Metric {
        var id: u32 = 0;
        try abi.check(abi.proxy_define_metric(@backingInt(kind), name.ptr, name.len, &id));
        return .{ .id = id };
    }

    /// Counters take non-negative offsets; gauges any.
    pub fn increment(self: Metric, offset: i64) void {
        // Metrics are best effort: a host refusing an update must not fail the request.
        _ = abi.proxy_increment_metric(self.id, offset);
    }

    pub fn record(self: Metric, value: u64) void {
        _ = abi.proxy_record_metric(self.id, value);
    }

    pub fn get(self: Metric) Error!u64 {
        var v: u64 = 0;
        try abi.check(abi.proxy_get_metric(self.id, &v));
        return v;
    }
};
