// The benchmark's "trivial filter": adds one request header and one response header.
// Written against the proxy-wasm v0.2.1 ABI (no SDK) so that the benchmark measures the
// hosts, not an SDK. The same .wasm runs in Envoy and in edgegw.

// The root context, the allocator and context creation: the no-op filter's exports.
comptime {
    _ = @import("noop.zig");
}

extern "env" fn proxy_add_header_map_value(map_type: u32, key_ptr: [*]const u8, key_len: usize, value_ptr: [*]const u8, value_len: usize) u32;

const name = "x-trivial";
// tests/integration/test_reload.py patches "AAAA" in the built module to make a second version.
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
