// The benchmark's "trivial filter": adds one request header and one response header.
// Self-contained against the proxy-wasm v0.2.1 ABI (no SDK) so that the benchmark measures
// the hosts, not an SDK. The same .wasm runs in Envoy and in edgegw.
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

const name = "x-trivial";
// tests/test_reload.py patches "AAAA" in the built module to make a second version.
const value = "trivial-AAAA";

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
