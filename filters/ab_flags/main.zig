//! ab_flags: sticky A/B assignment (x-edgegw-variant) and feature flags (x-edgegw-flags).
//! See docs/filters/ab_flags.md for the exact bucketing so applications can reproduce it.
const std = @import("std");
const pw = @import("proxy_wasm");
const config = @import("config.zig");
const flags = @import("flags.zig");

pub const panic = pw.panic;

const Root = struct {
    cfg: ?config.Loaded = null,
    // Parsed shared-data flag document, re-parsed only when its CAS changes.
    doc: ?std.json.Parsed(std.json.Value) = null,
    doc_cas: u32 = 0,
    ids: u64 = 0,

    pub const Http = Stream;

    pub fn onConfigure(self: *Root, size: usize) !bool {
        self.cfg = config.load(try pw.pluginConfiguration(size)) orelse return false;
        if (self.cfg.?.parsed.value.flags_sync) |sync| {
            try pw.setTickPeriod(@max(100, sync.interval_ms));
            self.onTick();
        }
        return true;
    }

    /// flags_sync: fetch the flag document; the answer lands in onHttpCallResponse.
    pub fn onTick(self: *Root) void {
        const sync = self.cfg.?.parsed.value.flags_sync orelse return;
        const hdrs = [_]pw.Header{
            .{ .name = ":method", .value = "GET" },
            .{ .name = ":path", .value = sync.path },
            .{ .name = ":authority", .value = sync.authority },
            .{ .name = "accept", .value = "application/json" },
        };
        _ = pw.httpCall(sync.cluster, &hdrs, "", &.{}, sync.timeout_ms) catch |err| {
            pw.log(.warn, "ab_flags: flags sync call failed: {s}", .{@errorName(err)});
        };
    }

    /// Stores a fetched document in shared data when it is newer than what is there.
    pub fn onHttpCallResponse(self: *Root, token: u32, n_headers: usize, body_size: usize, n_trailers: usize) !void {
        _ = token;
        _ = n_headers;
        _ = n_trailers;
        const key = self.cfg.?.parsed.value.flags_key;
        if (pw.httpCallResponseStatus() != 200) return error.FlagsSyncStatus;
        const body = try pw.httpCallResponseBody(body_size);
        const doc = try pw.json.parseValue(body);
        if (pw.json.lookup(doc, &.{"flags"}) == null) return error.FlagsSyncNoFlags;
        const version = pw.json.integer(pw.json.lookup(doc, &.{"version"})) orelse 0;
        const cur = try pw.getSharedData(key);
        if (cur) |c| {
            const old = pw.json.parseValue(c.value) catch null;
            const old_version = if (old) |o| pw.json.integer(pw.json.lookup(o, &.{"version"})) orelse -1 else -1;
            if (old_version == version) return;
        }
        pw.setSharedData(key, body, if (cur) |c| c.cas else 0) catch |err| switch (err) {
            error.CasMismatch => return, // another worker stored it first; next tick re-checks
            else => return err,
        };
    }

    /// The flag table: shared data `flags_key` when present and valid, else config flags.
    fn flagTable(self: *Root) ?std.json.Value {
        const c = &self.cfg.?;
        const fallback: ?std.json.Value = if (c.fallback_flags) |f| pw.json.lookup(f.value, &.{"flags"}) else null;
        const cur = (pw.getSharedData(c.parsed.value.flags_key) catch null) orelse return fallback;
        if (self.doc == null or cur.cas != self.doc_cas) {
            const parsed = std.json.parseFromSlice(std.json.Value, pw.allocator, cur.value, .{ .allocate = .alloc_always }) catch {
                pw.log(.warn, "ab_flags: shared data '{s}' is not JSON; using config flags", .{c.parsed.value.flags_key});
                return fallback;
            };
            if (self.doc) |old| old.deinit();
            self.doc = parsed;
            self.doc_cas = cur.cas;
        }
        return pw.json.lookup(self.doc.?.value, &.{"flags"}) orelse fallback;
    }

    /// A new anonymous id: not a secret, only needs to spread evenly and not repeat.
    fn newId(self: *Root, context_id: u32) []const u8 {
        self.ids += 1;
        var seed: [20]u8 = undefined;
        std.mem.writeInt(u64, seed[0..8], pw.currentTimeNanos(), .little);
        std.mem.writeInt(u64, seed[8..16], self.ids, .little);
        std.mem.writeInt(u32, seed[16..20], context_id, .little);
        const src = (pw.getProperty(&.{ "source", "address" }) catch null) orelse "";
        const a = pw.murmur3(&seed, 0x9747b28c) ^ pw.murmur3(src, 1);
        const b = pw.murmur3(&seed, a);
        return pw.fmt("{x:0>8}{x:0>8}", .{ a, b });
    }
};

const Stream = struct {
    root: *Root,
    id: u32,
    set_cookie: ?[]u8 = null,

    pub fn init(root: *Root, context_id: u32) Stream {
        return .{ .root = root, .id = context_id };
    }

    pub fn deinit(self: *Stream) void {
        if (self.set_cookie) |s| pw.allocator.free(s);
    }

    fn stableKey(self: *Stream, c: *const config.Config) ![]const u8 {
        for (c.key_headers) |h| if (try pw.request_headers.get(h)) |v| if (v.len > 0) return v;
        if (try pw.request_headers.get("cookie")) |cookie| {
            if (pw.cookieValue(cookie, c.cookie)) |v| if (v.len > 0) return v;
        }
        const id = self.root.newId(self.id);
        self.set_cookie = try pw.allocator.dupe(u8, pw.fmt("{s}={s}; Path=/; Max-Age={d}; HttpOnly; SameSite=Lax{s}", .{
            c.cookie, id, c.cookie_max_age, if (c.cookie_secure) "; Secure" else "",
        }));
        return id;
    }

    pub fn onRequestHeaders(self: *Stream, n_headers: usize, eos: bool) !pw.Action {
        _ = n_headers;
        _ = eos;
        const loaded = self.root.cfg orelse return .@"continue";
        const c = &loaded.parsed.value;
        const key = try self.stableKey(c);
        const full_path = (try pw.request_headers.get(":path")) orelse "/";
        const forced: ?[]const u8 = if (c.force_header.len > 0) try pw.request_headers.get(c.force_header) else null;
        for (c.experiments) |*e| {
            if (!applies(e, full_path)) continue;
            const variant = forcedVariant(e, forced) orelse assign(e, key);
            try pw.request_headers.replace(e.header, variant);
        }
        const table = self.root.flagTable();
        if (c.flags_header.len > 0) {
            if (table) |t| {
                const subject = flags.Subject{ .key = key, .country = try country(c), .claims = try claims(c) };
                try pw.request_headers.replace(c.flags_header, try flags.evaluate(t, &subject));
            } else try pw.request_headers.remove(c.flags_header); // never trust a client's copy
        }
        return .@"continue";
    }

    pub fn onResponseHeaders(self: *Stream, n_headers: usize, eos: bool) !pw.Action {
        _ = n_headers;
        _ = eos;
        if (self.set_cookie) |v| try pw.response_headers.add("set-cookie", v);
        return .@"continue";
    }
};

fn applies(e: *const config.Experiment, path: []const u8) bool {
    if (e.path_prefixes.len == 0) return true;
    for (e.path_prefixes) |p| if (std.mem.startsWith(u8, path, p)) return true;
    return false;
}

/// murmur3_32("<experiment>:<key>", 0) % total_weight, walked through the cumulative weights.
fn assign(e: *const config.Experiment, key: []const u8) []const u8 {
    var total: u64 = 0;
    for (e.variants) |v| total += v.weight;
    const point = pw.murmur3(pw.fmt("{s}:{s}", .{ e.name, key }), 0) % total;
    var acc: u64 = 0;
    for (e.variants) |v| {
        acc += v.weight;
        if (point < acc) return v.name;
    }
    return e.variants[e.variants.len - 1].name;
}

/// "B" forces B in every experiment that has it; "exp=B,other=A" targets experiments.
fn forcedVariant(e: *const config.Experiment, forced: ?[]const u8) ?[]const u8 {
    const f = forced orelse return null;
    var it = pw.util.listItems(f);
    while (it.next()) |raw| {
        const item = pw.util.trim(raw);
        const want = if (std.mem.indexOfScalar(u8, item, '=')) |eq| blk: {
            if (!std.mem.eql(u8, pw.util.trim(item[0..eq]), e.name)) continue;
            break :blk pw.util.trim(item[eq + 1 ..]);
        } else item;
        for (e.variants) |v| if (std.mem.eql(u8, v.name, want)) return v.name;
    }
    return null;
}

fn country(c: *const config.Config) ![]const u8 {
    // x-edgegw-* headers come from filters (edgegw strips them from clients); others a
    // client may have sent: unless the host vouches for the peer, its GeoIP answer wins.
    const trusted = try pw.peerTrusted();
    for (c.country_headers) |h| {
        if (!trusted and !std.mem.startsWith(u8, h, "x-edgegw-")) continue;
        if (try pw.request_headers.get(h)) |v| if (v.len == 2) return v;
    }
    if (try pw.getProperty(&.{ "edgegw", "geo", "country" })) |v| if (v.len == 2) return v;
    if (!trusted) for (c.country_headers) |h| if (try pw.request_headers.get(h)) |v| if (v.len == 2) return v;
    return "ZZ";
}

fn claims(c: *const config.Config) !?std.json.Value {
    if (c.claims_header.len == 0) return null;
    const raw = (try pw.request_headers.get(c.claims_header)) orelse return null;
    const text = if (raw.len > 0 and raw[0] == '{') raw else blk: {
        const dec = std.base64.url_safe_no_pad.Decoder;
        const trimmed = std.mem.trimEnd(u8, raw, "=");
        const n = dec.calcSizeForSlice(trimmed) catch return null;
        const buf = try pw.scratch().alloc(u8, n);
        dec.decode(buf, trimmed) catch return null;
        break :blk buf;
    };
    return pw.json.parseValue(text) catch null;
}

comptime {
    pw.plugin(Root);
}
