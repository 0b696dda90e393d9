//! Memory for filters.
//!
//! `allocator` is std.heap.wasm_allocator: a size-class allocator over memory.grow, so a
//! small allocation takes a small slot, not a 64 KiB page.
//! `scratch` is an arena that lives for one host callback: every byte the host hands to
//! the filter (headers, bodies, properties, shared data) is placed there and released when
//! the outermost proxy_on_* entry point returns. Copy into `allocator` what must survive.
const std = @import("std");

pub const allocator: std.mem.Allocator = std.heap.wasm_allocator;

var scratch_arena: std.heap.ArenaAllocator = .init(std.heap.wasm_allocator);
var depth: u32 = 0;

/// Allocator whose memory is valid until the current callback returns.
pub fn scratch() std.mem.Allocator {
    return scratch_arena.allocator();
}

/// Marks entry into a host callback (nesting-safe).
pub fn enter() void {
    depth += 1;
}

/// Marks the end of a host callback; the outermost one releases scratch memory.
pub fn leave() void {
    if (depth > 0) depth -= 1;
    // Keep a warm arena of modest size so the next request does not grow memory again.
    if (depth == 0) _ = scratch_arena.reset(.{ .retain_with_limit = 64 * 1024 });
}

var empty_byte: u8 = 0;

/// The ABI allocator export. The host copies returned values into this memory; it comes
/// from the scratch arena so callers never need to free host-returned bytes.
fn proxyOnMemoryAllocate(size: usize) callconv(.c) ?[*]u8 {
    // Never return 0 for a zero-length request: 0 means failure to the host.
    if (size == 0) return @ptrCast(&empty_byte);
    const buf = scratch_arena.allocator().alloc(u8, size) catch return null;
    return buf.ptr;
}

/// Kept for hosts that look for `malloc` (deprecated in v0.2.1 but still probed).
fn malloc(size: usize) callconv(.c) ?[*]u8 {
    return proxyOnMemoryAllocate(size);
}

pub fn exportAll() void {
    @export(&proxyOnMemoryAllocate, .{ .name = "proxy_on_memory_allocate" });
    @export(&malloc, .{ .name = "malloc" });
}
