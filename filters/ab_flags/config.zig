//! ab_flags configuration (see docs/filters/ab_flags.md).
const std = @import("std");
const pw = @import("proxy_wasm");

pub const Variant = struct { name: []const u8, weight: u32 = 1 };

pub const Experiment = struct {
    name: []const u8,
    variants: []const Variant = &.{},
    /// Request header that receives the variant (a route's `split.header`).
    header: []const u8 = "x-edgegw-variant",
    /// Apply only to paths starting with one of these (empty: all).
    path_prefixes: []const []const u8 = &.{},
};

/// Optional polling of the flag document, for hosts that do not mirror it into shared data
/// themselves (Envoy). edgegw's host keeps `edgegw.flags` fresh, so this stays off there.
pub const FlagsSync = struct {
    cluster: []const u8 = "edgegw.store",
    authority: []const u8 = "edgegw.store",
    path: []const u8 = "/v1/flags",
    interval_ms: u32 = 5000,
    timeout_ms: u32 = 1000,
};

pub const Config = struct {
    experiments: []const Experiment = &.{},
    /// Headers holding a stable identity, first present wins (e.g. set by jwt_auth).
    key_headers: []const []const u8 = &.{"x-user-id"},
    /// Cookie carrying the anonymous id the filter assigns when no key header is present.
    cookie: []const u8 = "edgegw_uid",
    cookie_max_age: u64 = 31_536_000,
    cookie_secure: bool = false,
    /// QA override: "B" (every experiment with a variant B) or "exp=B,exp2=A". Empty: off.
    force_header: []const u8 = "x-edgegw-force-variant",
    /// Shared-data key holding {"version":N,"flags":{...}} (kept fresh by the host).
    flags_key: []const u8 = "edgegw.flags",
    /// Header that carries the evaluated flags to the backend ("a=on,b=off").
    flags_header: []const u8 = "x-edgegw-flags",
    /// Country: first of these headers, else property edgegw.geo.country, else ZZ.
    country_headers: []const []const u8 = &.{ "x-edgegw-country", "cf-ipcountry", "x-country-code" },
    /// Claims for targeting: JSON object, or base64url of one (written by jwt_auth).
    claims_header: []const u8 = "x-edgegw-claims",
    flags_sync: ?FlagsSync = null,
};

pub const Loaded = struct {
    parsed: std.json.Parsed(Config),
    /// Flags from this filter's own config ("flags": {...}), used when shared data has none.
    fallback_flags: ?std.json.Parsed(std.json.Value),
};

pub fn load(bytes: []const u8) ?Loaded {
    const text = if (bytes.len == 0) "{}" else bytes;
    const parsed = pw.json.parse(Config, text) catch |err| {
        pw.log(.err, "ab_flags: invalid configuration: {s}", .{@errorName(err)});
        return null;
    };
    for (parsed.value.experiments) |e| {
        var total: u64 = 0;
        for (e.variants) |v| total += v.weight;
        if (e.variants.len == 0 or total == 0) {
            pw.log(.err, "ab_flags: experiment '{s}' needs variants with a positive total weight", .{e.name});
            return null;
        }
    }
    const whole = std.json.parseFromSlice(std.json.Value, pw.allocator, text, .{ .allocate = .alloc_always }) catch return null;
    const has_flags = switch (whole.value) {
        .object => |o| o.get("flags") != null,
        else => false,
    };
    return .{ .parsed = parsed, .fallback_flags = if (has_flags) whole else blk: {
        whole.deinit();
        break :blk null;
    } };
}
