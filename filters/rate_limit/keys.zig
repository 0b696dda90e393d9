//! What a policy counts (its key) and the IETF RateLimit headers
//! (draft-ietf-httpapi-ratelimit-headers-10: RateLimit-Policy and RateLimit).
const std = @import("std");
const pw = @import("proxy_wasm");
const config = @import("config.zig");
const gcra = @import("gcra.zig");

pub const Request = struct {
    ip: []const u8,
    path: []const u8, // without the query string
    route: []const u8,
    method: []const u8,
    host: []const u8,

    /// Reads only what `needs` names (a hostcall each); the others stay "" and no
    /// policy looks at them.
    pub fn read(trusted_hops: u32, needs: config.Needs) !Request {
        var path: []const u8 = "";
        if (needs.path) {
            const full = (try pw.request_headers.get(":path")) orelse "/";
            path = full[0 .. std.mem.indexOfAny(u8, full, "?#") orelse full.len];
        }
        return .{
            .ip = if (needs.ip) try clientIp(trusted_hops) else "",
            .path = path,
            .route = if (needs.route) try routeName() else "",
            .method = if (needs.method) (try pw.request_headers.get(":method")) orelse "" else "",
            .host = if (needs.host) (try pw.request_headers.get(":authority")) orelse "" else "",
        };
    }
};

/// Envoy 1.40 exposes the route as xds.route_name; edgegw (and older Envoy) as route_name.
fn routeName() ![]const u8 {
    if (try pw.getProperty(&.{"route_name"})) |r| if (r.len > 0) return r;
    return (try pw.getProperty(&.{ "xds", "route_name" })) orelse "";
}

/// The peer address without its port, or, with N trusted proxy hops in front of us, the
/// N-th X-Forwarded-For entry from the right (the address our outermost trusted proxy saw).
pub fn clientIp(trusted_hops: u32) ![]const u8 {
    if (trusted_hops > 0) {
        if (try pw.request_headers.get("x-forwarded-for")) |xff| {
            var items: [64][]const u8 = undefined;
            var n: usize = 0;
            var it = pw.util.listItems(xff);
            while (it.next()) |item| {
                const t = pw.util.trim(item);
                if (t.len == 0) continue;
                if (n == items.len) break;
                items[n] = t;
                n += 1;
            }
            if (n > 0) return items[if (n >= trusted_hops) n - trusted_hops else 0];
        }
    }
    const addr = (try pw.getProperty(&.{ "source", "address" })) orelse return "unknown";
    return stripPort(addr);
}

pub fn stripPort(addr: []const u8) []const u8 {
    if (addr.len > 0 and addr[0] == '[') {
        const end = std.mem.indexOfScalar(u8, addr, ']') orelse return addr;
        return addr[1..end];
    }
    if (std.mem.count(u8, addr, ":") == 1) return addr[0..std.mem.indexOfScalar(u8, addr, ':').?];
    return addr;
}

pub fn applies(p: *const config.Policy, req: *const Request) bool {
    if (p.routes.len > 0) {
        var hit = false;
        for (p.routes) |r| hit = hit or std.mem.eql(u8, r, req.route);
        if (!hit) return false;
    }
    if (p.path_prefixes.len > 0) {
        var hit = false;
        for (p.path_prefixes) |pre| hit = hit or std.mem.startsWith(u8, req.path, pre);
        if (!hit) return false;
    }
    return true;
}

/// Keys longer than this are stored as "<prefix>:<policy>#<sha256 hex of the parts>": a
/// client chooses header values of any size, and local mode keeps one shared-data entry
/// per key (the host bounds entries too, docs/filters/rate_limit.md). The hash keeps
/// distinct values apart (truncating would merge them) and the separator '#' keeps hashed
/// keys apart from plain ones.
pub const max_key_bytes = 128;

/// "<prefix>:<policy>:<part>|<part>..." owned by pw.allocator; null when a header part is
/// missing (the policy does not apply to this request, e.g. per-user limits for anonymous).
pub fn build(prefix: []const u8, p: *const config.Policy, req: *const Request) !?[]u8 {
    var out = std.ArrayList(u8).empty;
    errdefer out.deinit(pw.allocator);
    try out.print(pw.allocator, "{s}:{s}", .{ prefix, p.name });
    const head = out.items.len;
    for (p.key, 0..) |part, i| {
        const value: []const u8 = if (std.mem.eql(u8, part, "ip")) req.ip else if (std.mem.eql(u8, part, "path")) req.path else if (std.mem.eql(u8, part, "route")) req.route else if (std.mem.eql(u8, part, "method")) req.method else if (std.mem.eql(u8, part, "host")) req.host else blk: {
            const name = part["header:".len..];
            const v = (try pw.request_headers.get(name)) orelse {
                out.deinit(pw.allocator);
                return null;
            };
            break :blk v;
        };
        try out.append(pw.allocator, if (i == 0) ':' else '|');
        try out.appendSlice(pw.allocator, value);
    }
    if (out.items.len > max_key_bytes) {
        var digest: [std.crypto.hash.sha2.Sha256.digest_length]u8 = undefined;
        std.crypto.hash.sha2.Sha256.hash(out.items[head..], &digest, .{});
        out.shrinkRetainingCapacity(head);
        try out.append(pw.allocator, '#');
        try out.appendSlice(pw.allocator, &std.fmt.bytesToHex(digest, .lower));
    }
    return try out.toOwnedSlice(pw.allocator);
}

/// RateLimit-Policy: "<name>";q=<burst>;w=<seconds to refill burst>
/// RateLimit: "<name>";r=<remaining>;t=<seconds until full>
/// One list member per evaluated policy (skipped ones omitted). Empty when disabled.
pub fn rateLimitHeaders(evals: anytype, enabled: bool) ![]pw.Header {
    if (!enabled) return &.{};
    var pol = std.ArrayList(u8).empty;
    var cur = std.ArrayList(u8).empty;
    const a = pw.scratch();
    for (evals) |*e| {
        if (!e.done or e.skipped or e.store_down) continue;
        const p = e.policy;
        const t_us: u64 = @max(1, (p.period_ms *| 1000) / @max(1, p.rate));
        const window_s = @max(1, gcra.divCeil(t_us *| e.result.limit, 1_000_000));
        if (pol.items.len > 0) try pol.appendSlice(a, ", ");
        try pol.print(a, "\"{s}\";q={d};w={d}", .{ p.name, e.result.limit, window_s });
        if (cur.items.len > 0) try cur.appendSlice(a, ", ");
        try cur.print(a, "\"{s}\";r={d};t={d}", .{ p.name, e.result.remaining, gcra.divCeil(e.result.reset_ms, 1000) });
    }
    if (pol.items.len == 0) return &.{};
    const hdrs = try a.alloc(pw.Header, 2);
    hdrs[0] = .{ .name = "ratelimit-policy", .value = pol.items };
    hdrs[1] = .{ .name = "ratelimit", .value = cur.items };
    return hdrs;
}
