//! rate_limit configuration (JSON, see docs/filters/rate_limit.md) and its validation.
const std = @import("std");
const pw = @import("proxy_wasm");

/// Policies one filter evaluates per request (each stream keeps a fixed array of them): a
/// configuration with more is rejected rather than silently cut short.
pub const max_policies = 16;

pub const Mode = enum { local, global };
pub const OnStoreError = enum { fail_open, fail_closed, local };

pub const PolicyJson = struct {
    name: []const u8 = "default",
    rate: u64 = 0,
    period_ms: ?u64 = null,
    period: ?[]const u8 = null,
    burst: ?u64 = null,
    cost: u64 = 1,
    /// Parts joined into the key: "ip", "path", "route", "method", "host", "header:<name>".
    key: []const []const u8 = &.{"ip"},
    /// Apply only on these routes (proxy-wasm property route_name); empty = every route.
    routes: []const []const u8 = &.{},
    /// Apply only to paths starting with one of these; empty = every path.
    path_prefixes: []const []const u8 = &.{},
};

pub const ConfigJson = struct {
    mode: Mode = .local,
    store_cluster: []const u8 = "edgegw.store",
    store_authority: []const u8 = "edgegw.store",
    store_path: []const u8 = "/v1/ratelimit",
    timeout_ms: u32 = 250,
    on_store_error: OnStoreError = .fail_open,
    trusted_hops: u32 = 0,
    headers: bool = true,
    key_prefix: []const u8 = "edgegw.rl",
    policies: []const PolicyJson = &.{},
};

pub const Policy = struct {
    name: []const u8,
    rate: u64,
    period_ms: u64,
    burst: u64,
    cost: u64,
    key: []const []const u8,
    routes: []const []const u8,
    path_prefixes: []const []const u8,
};

/// The request attributes some policy reads (its key, routes, path_prefixes): only
/// these are asked of the host per request, each being a hostcall.
pub const Needs = struct {
    ip: bool = false,
    path: bool = false,
    route: bool = false,
    method: bool = false,
    host: bool = false,

    fn add(self: *Needs, p: *const Policy) void {
        if (p.routes.len > 0) self.route = true;
        if (p.path_prefixes.len > 0) self.path = true;
        for (p.key) |part| {
            if (std.mem.eql(u8, part, "ip")) self.ip = true;
            if (std.mem.eql(u8, part, "path")) self.path = true;
            if (std.mem.eql(u8, part, "route")) self.route = true;
            if (std.mem.eql(u8, part, "method")) self.method = true;
            if (std.mem.eql(u8, part, "host")) self.host = true;
        }
    }
};

pub const Config = struct {
    parsed: std.json.Parsed(ConfigJson),
    policies: []Policy,
    needs: Needs,

    pub fn raw(self: *const Config) *const ConfigJson {
        return &self.parsed.value;
    }
};

/// "250ms", "1s", "1m", "1h", "1d" -> milliseconds.
pub fn parseDuration(s: []const u8) ?u64 {
    const units = [_]struct { suffix: []const u8, ms: u64 }{
        .{ .suffix = "ms", .ms = 1 },         .{ .suffix = "s", .ms = 1000 },
        .{ .suffix = "m", .ms = 60_000 },     .{ .suffix = "h", .ms = 3_600_000 },
        .{ .suffix = "d", .ms = 86_400_000 },
    };
    for (units) |u| {
        if (std.mem.endsWith(u8, s, u.suffix)) {
            const n = std.fmt.parseInt(u64, s[0 .. s.len - u.suffix.len], 10) catch return null;
            return std.math.mul(u64, n, u.ms) catch null;
        }
    }
    return null;
}

fn validKeyPart(part: []const u8) bool {
    const fixed = [_][]const u8{ "ip", "path", "route", "method", "host" };
    for (fixed) |f| if (std.mem.eql(u8, part, f)) return true;
    return std.mem.startsWith(u8, part, "header:") and part.len > "header:".len;
}

/// Parses and validates; logs the first problem and returns null on bad config.
pub fn load(bytes: []const u8) ?Config {
    const parsed = pw.json.parse(ConfigJson, if (bytes.len == 0) "{}" else bytes) catch |err| {
        pw.log(.err, "rate_limit: invalid configuration JSON: {s}", .{@errorName(err)});
        return null;
    };
    const c = &parsed.value;
    if (c.policies.len > max_policies) {
        pw.log(.err, "rate_limit: {d} policies, at most {d} are allowed", .{ c.policies.len, max_policies });
        return null;
    }
    const policies = pw.allocator.alloc(Policy, c.policies.len) catch return null;
    for (c.policies, policies) |p, *out| {
        const period = p.period_ms orelse if (p.period) |s| parseDuration(s) else 1000;
        const period_ms = period orelse {
            pw.log(.err, "rate_limit: policy '{s}': bad period", .{p.name});
            return null;
        };
        if (p.rate == 0 or period_ms == 0) {
            pw.log(.err, "rate_limit: policy '{s}': rate and period must be > 0", .{p.name});
            return null;
        }
        for (p.key) |part| if (!validKeyPart(part)) {
            pw.log(.err, "rate_limit: policy '{s}': unknown key part '{s}'", .{ p.name, part });
            return null;
        };
        out.* = .{
            .name = p.name,
            .rate = p.rate,
            .period_ms = period_ms,
            .burst = @max(1, p.burst orelse p.rate),
            .cost = p.cost,
            .key = p.key,
            .routes = p.routes,
            .path_prefixes = p.path_prefixes,
        };
    }
    var needs = Needs{};
    for (policies) |*p| needs.add(p);
    return .{ .parsed = parsed, .policies = policies, .needs = needs };
}
