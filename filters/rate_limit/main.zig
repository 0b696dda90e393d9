//! rate_limit: GCRA rate limiting with several policies, local (shared data + CAS) or
//! global (the edgegw store over proxy_http_call). See docs/filters/rate_limit.md.
const std = @import("std");
const pw = @import("proxy_wasm");
const config = @import("config.zig");
const gcra = @import("gcra.zig");
const keys = @import("keys.zig");

pub const panic = pw.panic;

const Root = struct {
    cfg: ?config.Config = null,
    allowed: ?pw.Metric = null,
    limited: ?pw.Metric = null,
    store_errors: ?pw.Metric = null,

    pub const Http = Stream;

    pub fn onConfigure(self: *Root, size: usize) !bool {
        const bytes = try pw.pluginConfiguration(size);
        self.cfg = config.load(bytes) orelse return false;
        self.allowed = pw.Metric.define(.counter, "edgegw_ratelimit_allowed") catch null;
        self.limited = pw.Metric.define(.counter, "edgegw_ratelimit_limited") catch null;
        self.store_errors = pw.Metric.define(.counter, "edgegw_ratelimit_store_errors") catch null;
        return true;
    }
};

const Eval = struct {
    policy: *const config.Policy,
    key: []const u8, // owned by pw.allocator (outlives the callback in global mode)
    token: u32 = 0,
    done: bool = false,
    skipped: bool = false, // fail_open on a store error: no verdict, no headers
    store_down: bool = false, // fail_closed on a store error: 503
    result: gcra.Result = undefined,
};

const Stream = struct {
    root: *Root,
    evals: [config.max_policies]Eval = undefined,
    n: usize = 0,
    waiting: usize = 0,
    replied: bool = false,

    pub fn init(root: *Root, context_id: u32) Stream {
        _ = context_id;
        return .{ .root = root };
    }

    pub fn deinit(self: *Stream) void {
        for (self.evals[0..self.n]) |e| pw.allocator.free(e.key);
    }

    fn cfg(self: *Stream) *const config.Config {
        return &self.root.cfg.?;
    }

    pub fn onRequestHeaders(self: *Stream, n_headers: usize, eos: bool) !pw.Action {
        _ = n_headers;
        _ = eos;
        const c = self.root.cfg orelse return .@"continue";
        const req = try keys.Request.read(c.raw().trusted_hops, c.needs);
        for (c.policies) |*p| {
            if (!keys.applies(p, &req)) continue;
            const key = (try keys.build(c.raw().key_prefix, p, &req)) orelse continue;
            self.evals[self.n] = .{ .policy = p, .key = key };
            self.n += 1;
        }
        if (self.n == 0) return .@"continue";
        if (c.raw().mode == .local) {
            // Shared data refuses new keys once full (docs/filters/rate_limit.md): that
            // is a store failure, handled by on_store_error like the global store's.
            for (self.evals[0..self.n]) |*e| self.evalLocal(e) catch |err| self.storeFailed(e, err);
            return self.decide();
        }
        for (self.evals[0..self.n]) |*e| {
            e.token = self.callStore(e) catch |err| {
                self.storeFailed(e, err);
                continue;
            };
            self.waiting += 1;
        }
        if (self.waiting == 0) return self.decide();
        return .pause;
    }

    fn params(e: *const Eval) gcra.Params {
        const p = e.policy;
        return .{ .rate = p.rate, .burst = p.burst, .period_ms = p.period_ms, .cost = p.cost };
    }

    fn evalLocal(self: *Stream, e: *Eval) !void {
        _ = self;
        e.result = try gcra.local(e.key, params(e));
        e.done = true;
    }

    fn callStore(self: *Stream, e: *Eval) !u32 {
        const raw = self.cfg().raw();
        const P = params(e);
        const Body = struct { key: []const u8, rate: u64, burst: u64, period_ms: u64, cost: u64 };
        const body = try pw.json.stringify(Body{ .key = e.key, .rate = P.rate, .burst = P.burst, .period_ms = P.period_ms, .cost = P.cost });
        const hdrs = [_]pw.Header{
            .{ .name = ":method", .value = "POST" },
            .{ .name = ":path", .value = raw.store_path },
            .{ .name = ":authority", .value = raw.store_authority },
            .{ .name = "content-type", .value = "application/json" },
        };
        return pw.httpCall(raw.store_cluster, &hdrs, body, &.{}, raw.timeout_ms);
    }

    /// Store failures follow on_store_error: fail_open skips the policy, fail_closed
    /// answers 503, local evaluates the policy with this VM's shared data (in local mode,
    /// where that is what failed, the policy is skipped).
    fn storeFailed(self: *Stream, e: *Eval, err: anyerror) void {
        pw.log(.warn, "rate_limit: store for policy '{s}' failed: {s}", .{ e.policy.name, @errorName(err) });
        if (self.root.store_errors) |m| m.increment(1);
        e.done = true;
        switch (self.cfg().raw().on_store_error) {
            .fail_open => e.skipped = true,
            .fail_closed => {
                e.store_down = true;
                e.result = .{ .allowed = false, .remaining = 0, .reset_ms = 0, .retry_after_ms = 0, .limit = e.policy.burst };
            },
            .local => if (self.cfg().raw().mode == .local) {
                e.skipped = true;
            } else self.evalLocal(e) catch {
                e.skipped = true;
            },
        }
    }

    pub fn onHttpCallResponse(self: *Stream, token: u32, n_headers: usize, body_size: usize, n_trailers: usize) !void {
        _ = n_headers;
        _ = n_trailers;
        for (self.evals[0..self.n]) |*e| {
            if (e.token != token or e.done) continue;
            self.waiting -|= 1;
            if (parseStoreAnswer(body_size, e.policy.burst)) |r| {
                e.result = r;
                e.done = true;
            } else |err| self.storeFailed(e, err);
        }
        if (self.waiting > 0 or self.replied) return;
        _ = try self.decide();
        // decide() either answered locally (terminal) or let the request through.
        if (!self.replied) try pw.continueStream(.request);
    }

    fn parseStoreAnswer(body_size: usize, burst: u64) !gcra.Result {
        const status = pw.httpCallResponseStatus();
        if (status != 200) return error.StoreStatus;
        const Answer = struct { allowed: bool, remaining: i64 = 0, reset_ms: i64 = 0, retry_after_ms: i64 = 0, limit: ?i64 = null };
        const a = try pw.json.parseScratch(Answer, try pw.httpCallResponseBody(body_size));
        return .{
            .allowed = a.allowed,
            .remaining = @intCast(@max(0, a.remaining)),
            .reset_ms = @intCast(@max(0, a.reset_ms)),
            .retry_after_ms = @intCast(@max(0, a.retry_after_ms)),
            .limit = if (a.limit) |l| @intCast(@max(0, l)) else burst,
        };
    }

    /// All verdicts are in: 429 (or 503 when fail_closed hit a store error) or continue.
    fn decide(self: *Stream) !pw.Action {
        var worst: ?*const Eval = null;
        for (self.evals[0..self.n]) |*e| {
            if (!e.done or e.skipped or e.result.allowed) continue;
            if (worst == null or e.result.retry_after_ms > worst.?.result.retry_after_ms) worst = e;
        }
        const w = worst orelse {
            if (self.root.allowed) |m| m.increment(1);
            return .@"continue";
        };
        if (self.root.limited) |m| m.increment(1);
        self.replied = true;
        const hdrs = try keys.rateLimitHeaders(self.evals[0..self.n], self.cfg().raw().headers);
        if (w.store_down) {
            try pw.sendProblem(503, "Service Unavailable", "rate limit store unavailable", hdrs);
            return .@"continue";
        }
        const retry_s = @max(1, gcra.divCeil(w.result.retry_after_ms, 1000));
        var all = std.ArrayList(pw.Header).empty;
        try all.appendSlice(pw.scratch(), hdrs);
        try all.append(pw.scratch(), .{ .name = "retry-after", .value = pw.fmt("{d}", .{retry_s}) });
        const detail = pw.fmt("rate limit '{s}' exceeded; retry in {d}s", .{ w.policy.name, retry_s });
        try pw.sendProblem(429, "Too Many Requests", detail, all.items);
        return .@"continue";
    }

    pub fn onResponseHeaders(self: *Stream, n_headers: usize, eos: bool) !pw.Action {
        _ = n_headers;
        _ = eos;
        if (self.replied or self.n == 0 or !self.cfg().raw().headers) return .@"continue";
        for (try keys.rateLimitHeaders(self.evals[0..self.n], true)) |h| try pw.response_headers.replace(h.name, h.value);
        return .@"continue";
    }
};

comptime {
    pw.plugin(Root);
}
