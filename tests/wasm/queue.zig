// Shared queues and shared data across worker processes (tests/integration/test_shared_data.py).
// Every VM registers queue "q" at configure and names itself by the time it started (`id`).
//   x-op: enqueue, x-item: I -> resolves "q" (no vm_id) and enqueues I
//   x-op: got, x-item: I     -> answers 200 with shared data "got:I" (the id of the VM
//                               whose on_queue_ready dequeued I) or "none"
// on_queue_ready dequeues every item I and sets shared data "got:I" to this VM's id.
// Every response gets `x-vm: <id>`: which worker answered.
const std = @import("std");

extern "env" fn proxy_get_header_map_value(map_type: u32, key_ptr: [*]const u8, key_len: usize, value_ptr: *[*]u8, value_len: *usize) u32;
extern "env" fn proxy_add_header_map_value(map_type: u32, key_ptr: [*]const u8, key_len: usize, value_ptr: [*]const u8, value_len: usize) u32;
extern "env" fn proxy_register_shared_queue(name_ptr: [*]const u8, name_len: usize, id: *u32) u32;
extern "env" fn proxy_resolve_shared_queue(vm_ptr: [*]const u8, vm_len: usize, name_ptr: [*]const u8, name_len: usize, id: *u32) u32;
extern "env" fn proxy_enqueue_shared_queue(id: u32, ptr: [*]const u8, len: usize) u32;
extern "env" fn proxy_dequeue_shared_queue(id: u32, ptr: *[*]u8, len: *usize) u32;
extern "env" fn proxy_get_shared_data(key_ptr: [*]const u8, key_len: usize, value_ptr: *[*]u8, value_len: *usize, cas: *u32) u32;
extern "env" fn proxy_set_shared_data(key_ptr: [*]const u8, key_len: usize, value_ptr: [*]const u8, value_len: usize, cas: u32) u32;
extern "env" fn proxy_get_current_time_nanoseconds(ns: *u64) u32;
extern "env" fn proxy_send_local_response(status: u32, details_ptr: [*]const u8, details_len: usize, body_ptr: [*]const u8, body_len: usize, headers_ptr: [*]const u8, headers_len: usize, grpc_status: i32) u32;

var heap: [64 * 1024]u8 = undefined;
var fba = std.heap.FixedBufferAllocator.init(&heap);
var id_buf: [24]u8 = undefined;
var id: []const u8 = "";

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
    _ = parent_id;
}

export fn proxy_on_vm_start(root_id: u32, size: u32) bool {
    _ = root_id;
    _ = size;
    return true;
}

export fn proxy_on_configure(root_id: u32, size: u32) bool {
    _ = root_id;
    _ = size;
    var now: u64 = 0;
    _ = proxy_get_current_time_nanoseconds(&now);
    id = std.fmt.bufPrint(&id_buf, "{d}", .{now}) catch return false;
    var qid: u32 = 0;
    return proxy_register_shared_queue("q", 1, &qid) == 0;
}

fn header(name: []const u8) ?[]const u8 {
    var ptr: [*]u8 = undefined;
    var len: usize = 0;
    if (proxy_get_header_map_value(0, name.ptr, name.len, &ptr, &len) != 0) return null;
    return ptr[0..len];
}

fn gotKey(buf: []u8, item: []const u8) ?[]const u8 {
    return std.fmt.bufPrint(buf, "got:{s}", .{item}) catch null;
}

export fn proxy_on_request_headers(context_id: u32, headers: u32, end_of_stream: bool) u32 {
    _ = context_id;
    _ = headers;
    _ = end_of_stream;
    const op = header("x-op") orelse return 0;
    const item = header("x-item") orelse return 0;
    if (std.mem.eql(u8, op, "enqueue")) {
        var qid: u32 = 0;
        if (proxy_resolve_shared_queue("", 0, "q", 1, &qid) != 0) return 0;
        _ = proxy_enqueue_shared_queue(qid, item.ptr, item.len);
    } else if (std.mem.eql(u8, op, "got")) {
        var buf: [128]u8 = undefined;
        const key = gotKey(&buf, item) orelse return 0;
        var ptr: [*]u8 = undefined;
        var len: usize = 0;
        var cas: u32 = 0;
        const body: []const u8 = if (proxy_get_shared_data(key.ptr, key.len, &ptr, &len, &cas) == 0) ptr[0..len] else "none";
        _ = proxy_send_local_response(200, "got", 3, body.ptr, body.len, "", 0, -1);
        return 1;
    }
    return 0;
}

export fn proxy_on_response_headers(context_id: u32, headers: u32, end_of_stream: bool) u32 {
    _ = context_id;
    _ = headers;
    _ = end_of_stream;
    _ = proxy_add_header_map_value(2, "x-vm", 4, id.ptr, id.len);
    return 0;
}

export fn proxy_on_queue_ready(root_id: u32, qid: u32) void {
    _ = root_id;
    while (true) {
        var ptr: [*]u8 = undefined;
        var len: usize = 0;
        if (proxy_dequeue_shared_queue(qid, &ptr, &len) != 0) return;
        var buf: [128]u8 = undefined;
        const key = gotKey(&buf, ptr[0..len]) orelse return;
        _ = proxy_set_shared_data(key.ptr, key.len, id.ptr, id.len, 0);
    }
}

export fn proxy_on_done(context_id: u32) bool {
    _ = context_id;
    return true;
}
