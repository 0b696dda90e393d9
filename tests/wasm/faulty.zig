// A filter that misbehaves on request: header `x-fault` selects how.
//   trap   -> executes @trap() (wasm `unreachable`; Zig's `unreachable` is UB in release)
//   loop   -> never returns (the host's CPU deadline must stop it)
//   bomb   -> grows memory until the host refuses, reports the pages it got
//   badptr -> hands the host an out-of-bounds pointer, reports the status it got
//   stall  -> pauses the request body and never resumes it (the host's pause timeout ends it)
//   calltrap -> pauses for an http_call to cluster `api` and traps in its response callback
//   halftrap -> traps halfway through an update of its state: later responses of the same VM
//              carry `x-faulty-state: torn` (a fresh VM does not)
// Without the header it adds `x-faulty: ok` to the response.
// Configured with the string "trap-on-create", it traps creating every stream context.
const std = @import("std");

extern "env" fn proxy_add_header_map_value(map_type: u32, key_ptr: [*]const u8, key_len: usize, value_ptr: [*]const u8, value_len: usize) u32;
extern "env" fn proxy_http_call(upstream_ptr: [*]const u8, upstream_len: usize, headers_ptr: [*]const u8, headers_len: usize, body_ptr: [*]const u8, body_len: usize, trailers_ptr: [*]const u8, trailers_len: usize, timeout_ms: u32, token_ptr: *u32) u32;
extern "env" fn proxy_get_buffer_bytes(buffer_type: u32, start: usize, max_size: usize, ptr: *[*]u8, size: *usize) u32;
extern "env" fn proxy_get_header_map_value(map_type: u32, key_ptr: [*]const u8, key_len: usize, value_ptr: *[*]u8, value_len: *usize) u32;

var heap: [64 * 1024]u8 = undefined;
var fba = std.heap.FixedBufferAllocator.init(&heap);
var spin: u32 = 0;
var fault: [16]u8 = undefined;
var fault_len: usize = 0;
var trap_on_create = false;
var torn = false; // set by `halftrap` just before it traps

export fn proxy_abi_version_0_2_1() void {}

export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    const buf = fba.allocator().alloc(u8, size) catch blk: {
        fba.reset();
        break :blk fba.allocator().alloc(u8, size) catch return null;
    };
    return buf.ptr;
}

export fn proxy_on_context_create(context_id: u32, parent_id: u32) void {
    _ = context_id;
    if (parent_id != 0 and trap_on_create) @trap();
}

export fn proxy_on_vm_start(root_id: u32, size: u32) bool {
    _ = root_id;
    _ = size;
    return true;
}

export fn proxy_on_configure(root_id: u32, size: u32) bool {
    _ = root_id;
    var ptr: [*]u8 = undefined;
    var len: usize = 0;
    const plugin_configuration = 7;
    if (size > 0 and proxy_get_buffer_bytes(plugin_configuration, 0, size, &ptr, &len) == 0)
        trap_on_create = std.mem.eql(u8, ptr[0..len], "trap-on-create");
    return true;
}

fn addResponse(name: []const u8, value: []const u8) void {
    _ = proxy_add_header_map_value(2, name.ptr, name.len, value.ptr, value.len);
}

export fn proxy_on_request_headers(context_id: u32, headers: u32, end_of_stream: bool) u32 {
    _ = context_id;
    _ = headers;
    _ = end_of_stream;
    const key = "x-fault";
    var ptr: [*]u8 = undefined;
    var len: usize = 0;
    fault_len = 0;
    if (proxy_get_header_map_value(0, key, key.len, &ptr, &len) != 0) return 0;
    fault_len = @min(len, fault.len);
    @memcpy(fault[0..fault_len], ptr[0..fault_len]);
    const which = fault[0..fault_len];
    if (std.mem.eql(u8, which, "trap")) @trap();
    if (std.mem.eql(u8, which, "halftrap")) {
        const p: *volatile bool = &torn; // volatile: the store must happen before the trap
        p.* = true;
        @trap();
    }
    if (std.mem.eql(u8, which, "calltrap")) {
        var buf: [128]u8 = undefined;
        const call_headers = serializePairs(&buf, &.{ .{ ":method", "GET" }, .{ ":path", "/" }, .{ ":authority", "api" } });
        var token: u32 = 0;
        const status = proxy_http_call("api", 3, call_headers.ptr, call_headers.len, "", 0, "", 0, 5000, &token);
        return if (status == 0) 1 else 0; // Pause until the response callback
    }
    if (std.mem.eql(u8, which, "loop")) {
        const p: *volatile u32 = &spin;
        while (true) p.* +%= 1;
    }
    return 0;
}

// The proxy-wasm map encoding: pair count, each pair's key and value sizes, then every
// key and value followed by a NUL.
fn serializePairs(buf: []u8, pairs: []const [2][]const u8) []u8 {
    std.mem.writeInt(u32, buf[0..4], @intCast(pairs.len), .little);
    var at: usize = 4;
    for (pairs) |pair| {
        std.mem.writeInt(u32, buf[at..][0..4], @intCast(pair[0].len), .little);
        std.mem.writeInt(u32, buf[at + 4 ..][0..4], @intCast(pair[1].len), .little);
        at += 8;
    }
    for (pairs) |pair| {
        for (pair) |text| {
            @memcpy(buf[at..][0..text.len], text);
            buf[at + text.len] = 0;
            at += text.len + 1;
        }
    }
    return buf[0..at];
}

export fn proxy_on_http_call_response(context_id: u32, token: u32, headers: u32, body_size: u32, trailers: u32) void {
    _ = context_id;
    _ = token;
    _ = headers;
    _ = body_size;
    _ = trailers;
    @trap();
}

export fn proxy_on_request_body(context_id: u32, body_size: u32, end_of_stream: bool) u32 {
    _ = context_id;
    _ = body_size;
    _ = end_of_stream;
    return if (std.mem.eql(u8, fault[0..fault_len], "stall")) 1 else 0;
}

export fn proxy_on_response_headers(context_id: u32, headers: u32, end_of_stream: bool) u32 {
    _ = context_id;
    _ = headers;
    _ = end_of_stream;
    const which = fault[0..fault_len];
    var text: [32]u8 = undefined;
    if (std.mem.eql(u8, which, "bomb")) {
        var pages: usize = @wasmMemorySize(0);
        while (@wasmMemoryGrow(0, 16) != -1) pages += 16;
        addResponse("x-pages", std.fmt.bufPrint(&text, "{d}", .{pages}) catch "?");
    } else if (std.mem.eql(u8, which, "badptr")) {
        const bad: [*]const u8 = @ptrFromInt(0xFFFFFF00);
        const status = proxy_add_header_map_value(2, bad, 64, bad, 64);
        addResponse("x-badptr-status", std.fmt.bufPrint(&text, "{d}", .{status}) catch "?");
    } else {
        addResponse("x-faulty", "ok");
        if (torn) addResponse("x-faulty-state", "torn");
    }
    return 0;
}

export fn proxy_on_done(context_id: u32) bool {
    _ = context_id;
    return true;
}

export fn proxy_on_log(context_id: u32) void {
    _ = context_id;
}

export fn proxy_on_delete(context_id: u32) void {
    _ = context_id;
}
