// Marks a request and its response with the same version string (test of hot reload:
// the test swaps builds whose marker differs and checks no response mixes two).
const std = @import("std");

extern "env" fn proxy_add_header_map_value(map_type: u32, key_ptr: [*]const u8, key_len: usize, value_ptr: [*]const u8, value_len: usize) u32;

var heap: [64 * 1024]u8 = undefined;
var fba = std.heap.FixedBufferAllocator.init(&heap);

export fn proxy_abi_version_0_2_1() void {}

export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    // Only configuration bytes are ever handed to this filter; a bump allocator that
    // resets when exhausted is enough for it.
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
    return true;
}

const name = "x-marker";
const value = "version-AAAA";

export fn proxy_on_request_headers(context_id: u32, headers: u32, end_of_stream: bool) u32 {
    _ = context_id;
    _ = headers;
    _ = end_of_stream;
    _ = proxy_add_header_map_value(0, name, name.len, value, value.len);
    return 0;
}

export fn proxy_on_response_headers(context_id: u32, headers: u32, end_of_stream: bool) u32 {
    _ = context_id;
    _ = headers;
    _ = end_of_stream;
    _ = proxy_add_header_map_value(2, name, name.len, value, value.len);
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
