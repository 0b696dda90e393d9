//! Raw proxy-wasm ABI v0.2.1 imports and enums (spec: proxy-wasm/spec abi-versions/v0.2.1).
//! Only the functions a filter actually calls end up as imports of its module.

pub const Status = enum(u32) {
    ok = 0,
    not_found = 1,
    bad_argument = 2,
    serialization_failure = 3,
    parse_failure = 4,
    invalid_memory_access = 6,
    empty = 7,
    cas_mismatch = 8,
    internal_failure = 10,
    unimplemented = 12,
    _,
};

/// Every hostcall failure, as an error value (never a trap).
pub const Error = error{
    NotFound,
    BadArgument,
    SerializationFailure,
    ParseFailure,
    InvalidMemoryAccess,
    Empty,
    CasMismatch,
    InternalFailure,
    Unimplemented,
    UnknownStatus,
    OutOfMemory,
};

pub fn check(status: u32) Error!void {
    return switch (@as(Status, @fromBackingInt(@intCast(status)))) {
        .ok => {},
        .not_found => error.NotFound,
        .bad_argument => error.BadArgument,
        .serialization_failure => error.SerializationFailure,
        .parse_failure => error.ParseFailure,
        .invalid_memory_access => error.InvalidMemoryAccess,
        .empty => error.Empty,
        .cas_mismatch => error.CasMismatch,
        .internal_failure => error.InternalFailure,
        .unimplemented => error.Unimplemented,
        _ => error.UnknownStatus,
    };
}

pub const Action = enum(u32) { @"continue" = 0, pause = 1 };

pub const LogLevel = enum(u32) { trace = 0, debug = 1, info = 2, warn = 3, err = 4, critical = 5 };

pub const BufferType = enum(u32) {
    request_body = 0,
    response_body = 1,
    downstream_data = 2,
    upstream_data = 3,
    http_call_response_body = 4,
    grpc_receive_buffer = 5,
    vm_configuration = 6,
    plugin_configuration = 7,
    call_data = 8,
};

pub const MapType = enum(u32) {
    request_headers = 0,
    request_trailers = 1,
    response_headers = 2,
    response_trailers = 3,
    grpc_initial_metadata = 4,
    grpc_trailing_metadata = 5,
    http_call_response_headers = 6,
    http_call_response_trailers = 7,
};

pub const MetricType = enum(u32) { counter = 0, gauge = 1, histogram = 2 };

pub const StreamType = enum(u32) { request = 0, response = 1, downstream = 2, upstream = 3 };

pub extern "env" fn proxy_log(level: u32, ptr: [*]const u8, len: usize) u32;
pub extern "env" fn proxy_get_log_level(ret_level: *u32) u32;
pub extern "env" fn proxy_get_current_time_nanoseconds(ret_time: *u64) u32;
pub extern "env" fn proxy_set_tick_period_milliseconds(period: u32) u32;
pub extern "env" fn proxy_set_effective_context(context_id: u32) u32;
pub extern "env" fn proxy_done() u32;

pub extern "env" fn proxy_get_buffer_bytes(t: u32, start: usize, max: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;
pub extern "env" fn proxy_set_buffer_bytes(t: u32, start: usize, size: usize, ptr: [*]const u8, len: usize) u32;
pub extern "env" fn proxy_get_buffer_status(t: u32, ret_len: *usize, ret_flags: *u32) u32;

pub extern "env" fn proxy_get_header_map_pairs(t: u32, ret_ptr: *?[*]u8, ret_len: *usize) u32;
pub extern "env" fn proxy_set_header_map_pairs(t: u32, ptr: [*]const u8, len: usize) u32;
pub extern "env" fn proxy_get_header_map_size(t: u32, ret_size: *usize) u32;
pub extern "env" fn proxy_get_header_map_value(t: u32, kp: [*]const u8, kl: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;
pub extern "env" fn proxy_add_header_map_value(t: u32, kp: [*]const u8, kl: usize, vp: [*]const u8, vl: usize) u32;
pub extern "env" fn proxy_replace_header_map_value(t: u32, kp: [*]const u8, kl: usize, vp: [*]const u8, vl: usize) u32;
pub extern "env" fn proxy_remove_header_map_value(t: u32, kp: [*]const u8, kl: usize) u32;

pub extern "env" fn proxy_get_property(pp: [*]const u8, pl: usize, ret_ptr: *?[*]u8, ret_len: *usize) u32;
pub extern "env" fn proxy_set_property(pp: [*]const u8, pl: usize, vp: [*]const u8, vl: usize) u32;

pub extern "env" fn proxy_send_local_response(
    status: u32,
    details_ptr: [*]const u8,
    details_len: usize,
    body_ptr: [*]const u8,
    body_len: usize,
    headers_ptr: [*]const u8,
    headers_len: usize,
    grpc_status: i32,
) u32;
pub extern "env" fn proxy_continue_stream(stream: u32) u32;
pub extern "env" fn proxy_close_stream(stream: u32) u32;

pub extern "env" fn proxy_http_call(
    up_ptr: [*]const u8,
    up_len: usize,
    hdr_ptr: [*]const u8,
    hdr_len: usize,
    body_ptr: [*]const u8,
    body_len: usize,
    trl_ptr: [*]const u8,
    trl_len: usize,
    timeout_ms: u32,
    ret_token: *u32,
) u32;

pub extern "env" fn proxy_get_shared_data(kp: [*]const u8, kl: usize, ret_ptr: *?[*]u8, ret_len: *usize, ret_cas: *u32) u32;
pub extern "env" fn proxy_set_shared_data(kp: [*]const u8, kl: usize, vp: [*]const u8, vl: usize, cas: u32) u32;

pub extern "env" fn proxy_register_shared_queue(np: [*]const u8, nl: usize, ret_id: *u32) u32;
pub extern "env" fn proxy_resolve_shared_queue(vp: [*]const u8, vl: usize, np: [*]const u8, nl: usize, ret_id: *u32) u32;
pub extern "env" fn proxy_dequeue_shared_queue(id: u32, ret_ptr: *?[*]u8, ret_len: *usize) u32;
pub extern "env" fn proxy_enqueue_shared_queue(id: u32, ptr: [*]const u8, len: usize) u32;

pub extern "env" fn proxy_define_metric(t: u32, np: [*]const u8, nl: usize, ret_id: *u32) u32;
pub extern "env" fn proxy_increment_metric(id: u32, offset: i64) u32;
pub extern "env" fn proxy_record_metric(id: u32, value: u64) u32;
pub extern "env" fn proxy_get_metric(id: u32, ret_value: *u64) u32;
