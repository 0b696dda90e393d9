// The benchmark's "no-op filter": loaded on a route, it exports no stream callback but
// context creation, so the request pays only for a filter being there. Against
// trivial.zig it separates a host's fixed cost per filtered request from the cost of the
// callbacks themselves. trivial.zig adds its callbacks to these exports.
const std = @import("std");

var heap: [64 * 1024]u8 = undefined;
var fba = std.heap.FixedBufferAllocator.init(&heap);

export fn proxy_abi_version_0_2_1() void {}

export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    // Only configuration bytes are ever handed to these filters; a bump allocator that
    // resets when exhausted is enough for them.
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
