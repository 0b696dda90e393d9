//! geo: country from trusted headers, else the host property edgegw.geo.country, else ZZ
//! (the property first when the host does not trust the peer);
//! adds geo headers for the backend, blocks (451) and redirects (302) by country, and
//! adds Vary when the answer depends on geo. See docs/filters/geo.md.
const std = @import("std");
const pw = @import("proxy_wasm");

pub const panic = pw.panic;

const Locale = struct { language: ?[]const u8 = null, currency: ?[]const u8 = null };

const Redirect = struct {
    countries: []const []const u8,
    /// Absolute URL or path; {path} = original path with query, {country} = country code.
    location: []const u8,
    path_prefixes: []const []const u8 = &.{},
    status: u32 = 302,
};

const Config = struct {
    trusted_headers: []const []const u8 = &.{ "cf-ipcountry", "x-country-code" },
    use_property: bool = true,
    default_country: []const u8 = "ZZ",
    country_header: []const u8 = "x-edgegw-country",
    language_header: []const u8 = "x-edgegw-language",
    currency_header: []const u8 = "x-edgegw-currency",
    countries: std.json.ArrayHashMap(Locale) = .{},
    default_language: ?[]const u8 = null,
    default_currency: ?[]const u8 = null,
    block: []const []const u8 = &.{},
    redirects: []const Redirect = &.{},
    /// Add Vary (the trusted header names) to responses that depend on geo.
    vary: bool = true,
};

const Root = struct {
    cfg: ?std.json.Parsed(Config) = null,
    blocked: ?pw.Metric = null,

    pub const Http = Stream;

    pub fn onConfigure(self: *Root, size: usize) !bool {
        const bytes = try pw.pluginConfiguration(size);
        const parsed = pw.json.parse(Config, if (bytes.len == 0) "{}" else bytes) catch |err| {
            pw.log(.err, "geo: invalid configuration: {s}", .{@errorName(err)});
            return false;
        };
        for (parsed.value.redirects) |r| if (r.status < 300 or r.status > 399) {
            pw.log(.err, "geo: redirect status {d} is not 3xx", .{r.status});
            return false;
        };
        self.cfg = parsed;
        self.blocked = pw.Metric.define(.counter, "edgegw_geo_blocked") catch null;
        return true;
    }
};

/// Two letters or digits, upper-cased; Cloudflare's XX (unknown) does not count.
fn normalize(raw: []const u8) ?[2]u8 {
    const v = pw.util.trim(raw);
    if (v.len != 2 or !std.ascii.isAlphanumeric(v[0]) or !std.ascii.isAlphanumeric(v[1])) return null;
    const out = [2]u8{ std.ascii.toUpper(v[0]), std.ascii.toUpper(v[1]) };
    if (std.mem.eql(u8, &out, "XX")) return null;
    return out;
}

fn contains(list: []const []const u8, country: []const u8) bool {
    for (list) |c| if (std.ascii.eqlIgnoreCase(c, country)) return true;
    return false;
}

const Stream = struct {
    root: *Root,
    vary: bool = false,

    pub fn init(root: *Root, context_id: u32) Stream {
        _ = context_id;
        return .{ .root = root };
    }

    fn country(c: *const Config) ![]const u8 {
        // A client can send any header: unless the host vouches for the peer (a trusted
        // proxy that writes them), the host's own GeoIP answer wins over trusted_headers.
        const prefer_ip = c.use_property and !(try pw.peerTrusted());
        if (prefer_ip) if (try ipCountry()) |cc| return cc;
        for (c.trusted_headers) |h| if (try pw.request_headers.get(h)) |v| if (normalize(v)) |cc| {
            return try pw.scratch().dupe(u8, &cc);
        };
        if (c.use_property and !prefer_ip) if (try ipCountry()) |cc| return cc;
        return c.default_country;
    }

    fn ipCountry() !?[]const u8 {
        const v = (try pw.getProperty(&.{ "edgegw", "geo", "country" })) orelse return null;
        const cc = normalize(v) orelse return null;
        return try pw.scratch().dupe(u8, &cc);
    }

    pub fn onRequestHeaders(self: *Stream, n_headers: usize, eos: bool) !pw.Action {
        _ = n_headers;
        _ = eos;
        const parsed = self.root.cfg orelse return .@"continue";
        const c = &parsed.value;
        const cc = try country(c);
        self.vary = c.vary and c.trusted_headers.len > 0;
        const extra = try varyList(c, self.vary);
        if (contains(c.block, cc)) {
            if (self.root.blocked) |m| m.increment(1);
            try pw.sendProblem(451, "Unavailable For Legal Reasons", pw.fmt("not available in {s}", .{cc}), extra);
            return .@"continue";
        }
        const full = (try pw.request_headers.get(":path")) orelse "/";
        for (c.redirects) |r| {
            if (!contains(r.countries, cc)) continue;
            if (r.path_prefixes.len > 0 and !anyPrefix(r.path_prefixes, full)) continue;
            const loc = try expand(r.location, full, cc);
            if (std.mem.eql(u8, loc, full)) continue; // already there: no loop
            var hdrs = std.ArrayList(pw.Header).empty;
            try hdrs.appendSlice(pw.scratch(), extra);
            try hdrs.append(pw.scratch(), .{ .name = "location", .value = loc });
            try pw.sendLocalResponse(r.status, "edgegw_geo_redirect", "", hdrs.items, -1);
            return .@"continue";
        }
        try pw.request_headers.replace(c.country_header, cc);
        const locale = c.countries.map.get(cc) orelse Locale{};
        try setOrRemove(c.language_header, locale.language orelse c.default_language);
        try setOrRemove(c.currency_header, locale.currency orelse c.default_currency);
        return .@"continue";
    }

    pub fn onResponseHeaders(self: *Stream, n_headers: usize, eos: bool) !pw.Action {
        _ = n_headers;
        _ = eos;
        if (!self.vary) return .@"continue";
        const parsed = self.root.cfg orelse return .@"continue";
        var value = std.ArrayList(u8).empty;
        const existing = (try pw.response_headers.get("vary")) orelse "";
        if (std.mem.eql(u8, pw.util.trim(existing), "*")) return .@"continue";
        try value.appendSlice(pw.scratch(), existing);
        for (parsed.value.trusted_headers) |h| {
            if (hasToken(existing, h)) continue;
            if (value.items.len > 0) try value.appendSlice(pw.scratch(), ", ");
            try value.appendSlice(pw.scratch(), h);
        }
        try pw.response_headers.replace("vary", value.items);
        return .@"continue";
    }
};

fn setOrRemove(name: []const u8, value: ?[]const u8) !void {
    if (name.len == 0) return;
    // Always overwrite or drop: a client must not smuggle its own geo headers through.
    if (value) |v| try pw.request_headers.replace(name, v) else try pw.request_headers.remove(name);
}

fn varyList(c: *const Config, on: bool) ![]const pw.Header {
    if (!on) return &.{};
    const joined = try std.mem.join(pw.scratch(), ", ", c.trusted_headers);
    const out = try pw.scratch().alloc(pw.Header, 1);
    out[0] = .{ .name = "vary", .value = joined };
    return out;
}

fn hasToken(list: []const u8, token: []const u8) bool {
    var it = pw.util.listItems(list);
    while (it.next()) |t| if (std.ascii.eqlIgnoreCase(pw.util.trim(t), token)) return true;
    return false;
}

fn anyPrefix(prefixes: []const []const u8, path: []const u8) bool {
    for (prefixes) |p| if (std.mem.startsWith(u8, path, p)) return true;
    return false;
}

fn expand(template: []const u8, path: []const u8, cc: []const u8) ![]const u8 {
    var out = std.ArrayList(u8).empty;
    var rest = template;
    while (std.mem.indexOfScalar(u8, rest, '{')) |open| {
        try out.appendSlice(pw.scratch(), rest[0..open]);
        const tail = rest[open..];
        if (std.mem.startsWith(u8, tail, "{path}")) {
            try out.appendSlice(pw.scratch(), path);
            rest = tail["{path}".len..];
        } else if (std.mem.startsWith(u8, tail, "{country}")) {
            try out.appendSlice(pw.scratch(), cc);
            rest = tail["{country}".len..];
        } else {
            try out.append(pw.scratch(), '{');
            rest = tail[1..];
        }
    }
    try out.appendSlice(pw.scratch(), rest);
    return out.items;
}

comptime {
    pw.plugin(Root);
}
