//! jwt_auth: verifies JWTs (HS*, RS*, PS*, ES256/384, EdDSA) against configured providers,
//! checks time claims, issuer, audience, required claims and scopes, and forwards claims
//! as request headers. See docs/filters/jwt_auth.md.
const std = @import("std");
const pw = @import("proxy_wasm");
const config = @import("config.zig");
const keys = @import("keys.zig");
const token = @import("token.zig");

pub const panic = pw.panic;

const tick_ms = 1000;

const Root = struct {
    cfg: ?config.Config = null,
    waiting: std.ArrayList(*Stream) = .empty, // streams paused for a JWKS fetch
    allowed: ?pw.Metric = null,
    denied: ?pw.Metric = null,

    pub const Http = Stream;

    pub fn onConfigure(self: *Root, size: usize) !bool {
        self.cfg = config.load(try pw.pluginConfiguration(size)) orelse return false;
        self.allowed = pw.Metric.define(.counter, "edgegw_jwt_allowed") catch null;
        self.denied = pw.Metric.define(.counter, "edgegw_jwt_denied") catch null;
        for (self.cfg.?.providers) |p| if (p.json.jwks_uri != null) {
            try pw.setTickPeriod(tick_ms); // first fetch and refreshes happen on ticks
            break;
        };
        return true;
    }

    pub fn onTick(self: *Root) void {
        const c = &(self.cfg orelse return);
        const now = pw.currentTimeMillis();
        for (c.providers) |*p| {
            const uri = p.json.jwks_uri orelse continue;
            // An answer to a fetch made by a stream that ended is dropped by the SDK:
            // forget such a fetch once it is surely over.
            if (p.fetch_token != 0 and now -| p.last_attempt_ms > 2 * @as(u64, uri.timeout_ms) + 1000) p.fetch_token = 0;
            const stale = p.fetched_at_ms == 0 or now -| p.fetched_at_ms >= @as(u64, uri.cache_seconds) * 1000;
            if (stale and now -| p.last_attempt_ms >= @as(u64, uri.min_refetch_seconds) * 1000) self.fetch(p);
        }
    }

    /// Starts a JWKS fetch unless one is in flight; true when one is (now) in flight.
    fn fetch(self: *Root, p: *config.Provider) void {
        _ = self;
        const uri = p.json.jwks_uri orelse return;
        if (p.fetch_token != 0) return;
        p.last_attempt_ms = pw.currentTimeMillis();
        const hdrs = [_]pw.Header{
            .{ .name = ":method", .value = "GET" },
            .{ .name = ":path", .value = uri.path },
            .{ .name = ":authority", .value = uri.authority orelse uri.backend },
            .{ .name = "accept", .value = "application/json" },
        };
        p.fetch_token = pw.httpCall(uri.backend, &hdrs, "", &.{}, uri.timeout_ms) catch |err| {
            pw.log(.warn, "jwt_auth: cannot fetch JWKS of '{s}': {s}", .{ p.json.issuer, @errorName(err) });
            return;
        };
    }

    pub fn onHttpCallResponse(self: *Root, tok: u32, n_headers: usize, body_size: usize, n_trailers: usize) void {
        _ = n_headers;
        _ = n_trailers;
        const c = &(self.cfg orelse return);
        for (c.providers) |*p| {
            if (p.fetch_token != tok) continue;
            p.fetch_token = 0;
            self.installKeys(p, body_size);
        }
        // Every waiting stream gets its verdict now, with whatever keys we have.
        const waiters = self.waiting.toOwnedSlice(pw.allocator) catch return;
        defer pw.allocator.free(waiters);
        for (waiters) |s| {
            pw.setEffectiveContext(s.context_id) catch continue;
            s.waiting = false;
            s.retry();
        }
    }

    fn installKeys(self: *Root, p: *config.Provider, body_size: usize) void {
        _ = self;
        const status = pw.httpCallResponseStatus();
        if (status != 200) {
            pw.log(.warn, "jwt_auth: JWKS of '{s}' answered {d}; keeping {d} old keys", .{ p.json.issuer, status, p.keys.len });
            return;
        }
        const body = pw.httpCallResponseBody(body_size) catch return;
        const doc = pw.json.parseValue(body) catch {
            pw.log(.warn, "jwt_auth: JWKS of '{s}' is not JSON; keeping old keys", .{p.json.issuer});
            return;
        };
        const fresh = keys.fromJwks(pw.allocator, doc) catch {
            pw.log(.warn, "jwt_auth: JWKS of '{s}' has no keys array; keeping old keys", .{p.json.issuer});
            return;
        };
        p.keys = fresh; // old keys are leaked on purpose: a few KB per rotation, never freed mid-use
        p.fetched_at_ms = pw.currentTimeMillis();
    }

    fn unwait(self: *Root, s: *Stream) void {
        for (self.waiting.items, 0..) |w, i| if (w == s) {
            _ = self.waiting.swapRemove(i);
            return;
        };
    }
};

const Stream = struct {
    root: *Root,
    context_id: u32,
    raw_token: []const u8 = "", // owned while waiting for keys
    waiting: bool = false,

    pub fn init(root: *Root, context_id: u32) Stream {
        return .{ .root = root, .context_id = context_id };
    }

    /// A fetch started while this stream ran is answered here (the SDK routes answers to
    /// the calling context); the root handles it for every waiting stream.
    pub fn onHttpCallResponse(self: *Stream, tok: u32, n_headers: usize, body_size: usize, n_trailers: usize) void {
        self.root.onHttpCallResponse(tok, n_headers, body_size, n_trailers);
    }

    pub fn deinit(self: *Stream) void {
        if (self.waiting) self.root.unwait(self);
        if (self.raw_token.len > 0) pw.allocator.free(self.raw_token);
    }

    fn cfg(self: *Stream) *const config.ConfigJson {
        return self.root.cfg.?.raw();
    }

    pub fn onRequestHeaders(self: *Stream, n_headers: usize, eos: bool) !pw.Action {
        _ = n_headers;
        _ = eos;
        if (self.root.cfg == null) return .@"continue";
        const c = self.cfg();
        // Clients must never be able to send what only this filter may assert.
        if (c.forward_claims) |fc| for (fc.map.values()) |h| try pw.request_headers.remove(h);
        if (c.claims_header.len > 0) try pw.request_headers.remove(c.claims_header);
        const text = try self.extract() orelse {
            if (c.allow_missing) return .@"continue";
            try self.deny(401, null, "no bearer token");
            return .@"continue";
        };
        if (text.len > c.max_token_bytes) {
            try self.deny(401, "invalid_token", "token too large");
            return .@"continue";
        }
        return self.check(text, true);
    }

    /// Verifies `text`; may pause to fetch unknown keys (once) when `may_fetch`.
    fn check(self: *Stream, text: []const u8, may_fetch: bool) !pw.Action {
        const c = self.cfg();
        const t = token.parse(text) catch |err| {
            try self.deny(401, "invalid_token", if (err == error.BadAlgorithm) "unsupported alg" else "malformed token");
            return .@"continue";
        };
        const iss = pw.json.string(t.claim("iss")) orelse {
            try self.deny(401, "invalid_token", "missing iss");
            return .@"continue";
        };
        const provider = self.findProvider(iss) orelse {
            try self.deny(401, "invalid_token", "unknown issuer");
            return .@"continue";
        };
        const key = provider.findKey(t.alg, t.kid) orelse {
            if (may_fetch and provider.json.jwks_uri != null) {
                const uri = provider.json.jwks_uri.?;
                const now = pw.currentTimeMillis();
                if (provider.fetch_token == 0 and now -| provider.last_attempt_ms >= @as(u64, uri.min_refetch_seconds) * 1000)
                    self.root.fetch(provider);
                if (provider.fetch_token != 0) {
                    self.raw_token = try pw.allocator.dupe(u8, text);
                    try self.root.waiting.append(pw.allocator, self);
                    self.waiting = true;
                    return .pause;
                }
            }
            try self.deny(401, "invalid_token", "no key for this token");
            return .@"continue";
        };
        keys.verify(t.alg, key, t.signed, t.signature) catch {
            try self.deny(401, "invalid_token", "bad signature");
            return .@"continue";
        };
        const now_s = @as(f64, @floatFromInt(pw.currentTimeNanos())) / 1e9;
        if (token.checkTimes(&t, now_s, @floatFromInt(c.clock_skew_seconds))) |why| {
            try self.deny(401, "invalid_token", why);
            return .@"continue";
        }
        if (!token.audienceOk(&t, provider.json.audiences)) {
            try self.deny(401, "invalid_token", "audience not accepted");
            return .@"continue";
        }
        for (c.required_claims) |name| if (t.claim(name) == null) {
            try self.deny(403, "insufficient_scope", pw.fmt("missing claim {s}", .{name}));
            return .@"continue";
        };
        if (!token.hasScopes(&t, c.required_scopes)) {
            try self.deny(403, "insufficient_scope", "missing scope");
            return .@"continue";
        }
        try self.forward(&t);
        if (self.root.allowed) |m| m.increment(1);
        return .@"continue";
    }

    /// After a JWKS fetch: verify the held token and resume or answer.
    fn retry(self: *Stream) void {
        const text = self.raw_token;
        defer {
            pw.allocator.free(text);
            self.raw_token = "";
        }
        const action = self.check(text, false) catch {
            pw.sendProblem(500, "Internal Server Error", "jwt_auth failed", &.{}) catch {};
            return;
        };
        if (action == .@"continue") pw.continueStream(.request) catch {};
    }

    fn findProvider(self: *Stream, iss: []const u8) ?*config.Provider {
        for (self.root.cfg.?.providers) |*p| if (std.mem.eql(u8, p.json.issuer, iss)) return p;
        return null;
    }

    fn extract(self: *Stream) !?[]const u8 {
        const c = self.cfg();
        if (try pw.request_headers.get(c.from_header.name)) |v| {
            const prefix = c.from_header.prefix;
            if (v.len > prefix.len and std.ascii.eqlIgnoreCase(v[0..prefix.len], prefix))
                return std.mem.trim(u8, v[prefix.len..], " ");
        }
        if (c.from_cookie) |name| if (try pw.request_headers.get("cookie")) |cookie| {
            if (pw.cookieValue(cookie, name)) |v| return v;
        };
        if (c.from_query) |name| if (try pw.request_headers.get(":path")) |path| {
            const q = std.mem.indexOfScalar(u8, path, '?') orelse return null;
            var it = std.mem.splitScalar(u8, path[q + 1 ..], '&');
            while (it.next()) |pair| {
                const eq = std.mem.indexOfScalar(u8, pair, '=') orelse continue;
                if (std.mem.eql(u8, pair[0..eq], name)) return pair[eq + 1 ..];
            }
        };
        return null;
    }

    fn forward(self: *Stream, t: *const token.Token) !void {
        const c = self.cfg();
        if (c.forward_claims) |fc| {
            var it = fc.map.iterator();
            while (it.next()) |entry| {
                const v = t.claim(entry.key_ptr.*) orelse continue;
                const text = switch (v) {
                    .string => |s| s,
                    .integer => |i| pw.fmt("{d}", .{i}),
                    .bool => |b| if (b) "true" else "false",
                    else => continue,
                };
                try pw.request_headers.replace(entry.value_ptr.*, text);
            }
        }
        if (c.claims_header.len > 0) try pw.request_headers.replace(c.claims_header, t.payload_b64);
    }

    fn deny(self: *Stream, status: u32, err_code: ?[]const u8, why: []const u8) !void {
        if (self.root.denied) |m| m.increment(1);
        const c = self.cfg();
        // RFC 6750 §3: no error attribute when the request carried no token at all.
        const challenge = if (err_code) |code|
            pw.fmt("Bearer realm=\"{s}\", error=\"{s}\", error_description=\"{s}\"", .{ c.realm, code, why })
        else
            pw.fmt("Bearer realm=\"{s}\"", .{c.realm});
        const title = if (status == 403) "Forbidden" else "Unauthorized";
        try pw.sendProblem(status, title, why, &.{.{ .name = "www-authenticate", .value = challenge }});
    }
};

comptime {
    pw.plugin(Root);
}
