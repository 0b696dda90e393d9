//! Conformance probe: request header `x-probe` names what to exercise (comma-separated),
//! and the filter reports what it observed in headers, so the same requests can be
//! replayed in Envoy and in edgegw and their observations compared.
//!
//! The plugin configuration, `{"name": "a", "probes": "trap_request_body"}` (both
//! optional), tells apart several copies of the probe on one route: `name` makes the copy
//! report each response it sees as `x-seen-by-<name>: <status>`; `probes` are behaviours
//! of that copy alone (the header reaches every copy): `trap_request_headers` and
//! `trap_request_body` (the VM traps there), `local_body` (a local reply from the request
//! body phase), or a request-phase `x-probe` name such as `local`.
const std = @import("std");
const pw = @import("proxy_wasm");

pub const panic = pw.panic;

const Config = struct {
    name: []const u8 = "",
    probes: []const u8 = "",
};

/// Whether the comma-separated list `probes` names `name`.
fn listed(probes: []const u8, name: []const u8) bool {
    var it = std.mem.tokenizeScalar(u8, probes, ',');
    while (it.next()) |p| if (std.mem.eql(u8, std.mem.trim(u8, p, " "), name)) return true;
    return false;
}

const Root = struct {
    ticks: u32 = 0,
    metric: ?pw.Metric = null,
    config: ?std.json.Parsed(Config) = null,
    pub const Http = Stream;

    pub fn onConfigure(self: *Root, size: usize) !bool {
        const bytes = try pw.pluginConfiguration(size);
        self.config = try pw.json.parse(Config, if (bytes.len == 0) "{}" else bytes);
        self.metric = try pw.Metric.define(.counter, "probe_counter");
        try pw.setTickPeriod(20);
        return true;
    }

    pub fn onTick(self: *Root) void {
        self.ticks += 1;
    }

    fn name(self: *const Root) []const u8 {
        return if (self.config) |c| c.value.name else "";
    }

    /// A behaviour this copy of the probe was configured with.
    fn configured(self: *const Root, probe: []const u8) bool {
        return if (self.config) |c| listed(c.value.probes, probe) else false;
    }
};

const Stream = struct {
    root: *Root,
    probes: []const u8 = "",
    buffered_body: bool = false,

    pub fn init(root: *Root, context_id: u32) Stream {
        _ = context_id;
        return .{ .root = root };
    }

    pub fn deinit(self: *Stream) void {
        if (self.probes.len > 0) pw.allocator.free(self.probes);
    }

    fn has(self: *const Stream, name: []const u8) bool {
        return listed(self.probes, name) or self.root.configured(name);
    }

    pub fn onRequestHeaders(self: *Stream, n: usize, eos: bool) !pw.Action {
        // @trap, not `unreachable`: ReleaseSmall may compile `unreachable` away.
        if (self.root.configured("trap_request_headers")) @trap();
        const rq = pw.request_headers;
        if (try rq.get("x-probe")) |probes| {
            self.probes = try pw.allocator.dupe(u8, probes);
            try rq.add("x-seen-eos", if (eos) "true" else "false");
        }
        _ = n;
        if (self.has("headers")) {
            try rq.add("x-added", "1");
            try rq.replace("x-replace", "new");
            try rq.remove("x-remove");
            const method = try rq.get(":method") orelse "?";
            const path = try rq.get(":path") orelse "?";
            try rq.add("x-seen-pseudo", pw.fmt("{s} {s}", .{ method, path }));
            try rq.add("x-seen-multi", try rq.get("x-multi") orelse "none");
            try rq.add("x-seen-missing", if (try rq.get("x-nope") == null) "null" else "present");
        }
        if (self.has("rewrite")) {
            try rq.replace(":path", "/rewritten?by=probe");
            try rq.replace(":method", "PUT");
        }
        if (self.has("setpairs")) {
            var out: std.ArrayList(pw.Header) = .empty;
            for (try rq.pairs()) |h| if (!std.mem.eql(u8, h.name, "x-dropped")) try out.append(pw.scratch(), h);
            try out.append(pw.scratch(), .{ .name = "x-only", .value = "1" });
            try rq.setPairs(out.items);
        }
        if (self.has("props")) {
            const path = try pw.getProperty(&.{ "request", "path" }) orelse "null";
            const method = try pw.getProperty(&.{ "request", "method" }) orelse "null";
            const name = try pw.getProperty(&.{"plugin_name"}) orelse "null";
            const root_id = try pw.getProperty(&.{"plugin_root_id"}) orelse "null";
            const route = try pw.getProperty(&.{"route_name"}) orelse (try pw.getProperty(&.{ "xds", "route_name" }) orelse "null");
            const source = try pw.getProperty(&.{ "source", "address" });
            const missing = try pw.getProperty(&.{ "no", "such", "thing" });
            try rq.add("x-props", pw.fmt("{s}|{s}|{s}|{s}|{s}|{s}|{s}", .{
                path, method, name, root_id, route,
                if (source != null) "source" else "nosource",
                if (missing == null) "missing" else "present",
            }));
        }
        if (self.has("shared")) {
            try pw.setSharedData("probe:k", "v1", 0);
            const got = (try pw.getSharedData("probe:k")).?;
            const bad = if (pw.setSharedData("probe:k", "v2", got.cas +% 1000)) "accepted" else |e| @errorName(e);
            const good = if (pw.setSharedData("probe:k", "v3", got.cas)) "ok" else |e| @errorName(e);
            const final = (try pw.getSharedData("probe:k")).?;
            const absent = try pw.getSharedData("probe:absent");
            try rq.add("x-shared", pw.fmt("{s}:{s}:{s}:{s}:{s}", .{ got.value, bad, good, final.value, if (absent == null) "null" else "present" }));
        }
        if (self.has("queue")) {
            const q = try pw.registerQueue("probe-q");
            try pw.enqueue(q, "hello");
            const item = try pw.dequeue(q) orelse "none";
            const empty = try pw.dequeue(q);
            const resolved = try pw.resolveQueue("", "no-such-queue");
            try rq.add("x-queue", pw.fmt("{s}:{s}:{s}", .{ item, if (empty == null) "empty" else "more", if (resolved == null) "unresolved" else "resolved" }));
        }
        if (self.has("metric")) {
            const m = self.root.metric.?;
            const before = try m.get();
            m.increment(2);
            try rq.add("x-metric-delta", pw.fmt("{d}", .{(try m.get()) - before}));
        }
        if (self.has("tick")) try rq.add("x-ticked", if (self.root.ticks > 0) "yes" else "no");
        if (self.has("log")) pw.log(.warn, "probe-log-line {s}", .{"visible"});
        if (self.has("local")) {
            try pw.sendLocalResponse(418, "probe_teapot", "short and stout", &.{.{ .name = "x-local", .value = "1" }}, -1);
            return .@"continue";
        }
        if (self.has("callout") or self.has("callout_dead")) {
            const cluster = if (self.has("callout")) "backend" else "dead";
            const hdrs = [_]pw.Header{
                .{ .name = ":method", .value = "GET" },
                .{ .name = ":path", .value = "/called?from=probe" },
                .{ .name = ":authority", .value = cluster },
                .{ .name = "x-callout", .value = "1" },
            };
            _ = try pw.httpCall(cluster, &hdrs, "", &.{}, 2000);
            return .pause;
        }
        if (self.has("callout_noauthority")) {
            // An empty :authority is still an :authority: Envoy sends the call, with a Host
            // of its own choosing (the probe reports which).
            const hdrs = [_]pw.Header{
                .{ .name = ":method", .value = "GET" },
                .{ .name = ":path", .value = "/called?from=probe" },
                .{ .name = ":authority", .value = "" },
            };
            _ = try pw.httpCall("backend", &hdrs, "", &.{}, 2000);
            return .pause;
        }
        if (self.has("authority")) try rq.replace(":authority", "rewritten.example");
        if (self.has("callout_bad")) {
            const hdrs = [_]pw.Header{.{ .name = ":method", .value = "GET" }};
            const r = if (pw.httpCall("backend", &hdrs, "", &.{}, 1000)) |_| "accepted" else |e| @errorName(e);
            try rq.add("x-callout-bad", r);
        }
        if (self.has("body")) {
            // A filter that changes the body size must drop Content-Length (both hosts
            // would otherwise send the old length).
            try rq.remove("content-length");
            self.buffered_body = true;
        }
        return .@"continue";
    }

    pub fn onHttpCallResponse(self: *Stream, token: u32, n_headers: usize, body_size: usize, n_trailers: usize) void {
        _ = token;
        _ = n_trailers;
        const status = pw.httpCallResponseStatus();
        const body = pw.httpCallResponseBody(body_size) catch "";
        pw.request_headers.add("x-callout-status", pw.fmt("{d}", .{status})) catch {};
        pw.request_headers.add("x-callout-has-headers", if (n_headers > 0) "yes" else "no") catch {};
        pw.request_headers.add("x-callout-body", if (std.mem.indexOf(u8, body, "/called") != null) "echoed" else "other") catch {};
        if (self.has("callout_noauthority")) {
            // The Host the backend got for the call (it echoes its request as JSON).
            const echoed = pw.json.parseValue(body) catch null;
            const got = if (echoed) |v| pw.json.string(pw.json.lookup(v, &.{ "headers", "host" })) else null;
            pw.request_headers.add("x-callout-host", got orelse "(none)") catch {};
        }
        pw.continueStream(.request) catch {};
    }

    pub fn onRequestBody(self: *Stream, size: usize, eos: bool) !pw.Action {
        if (self.root.configured("trap_request_body")) @trap();
        if (self.has("local_body")) {
            try pw.sendLocalResponse(418, "probe_teapot", "short and stout", &.{}, -1);
            return .@"continue";
        }
        if (!self.buffered_body) return .@"continue";
        if (!eos) return .pause; // StopIterationAndBuffer until the whole body is here
        try pw.setBuffer(.request_body, 0, 0, "pre-"); // prepend
        try pw.setBuffer(.request_body, size + 4, 0, "-post"); // append
        return .@"continue";
    }

    pub fn onResponseHeaders(self: *Stream, n: usize, eos: bool) !pw.Action {
        _ = n;
        _ = eos;
        const rs = pw.response_headers;
        const name = self.root.name();
        if (name.len > 0) {
            const status = try rs.get(":status") orelse "?";
            try rs.add(pw.fmt("x-seen-by-{s}", .{name}), status);
        }
        if (self.probes.len == 0) return .@"continue";
        try rs.add("x-probe-resp", "1");
        try rs.add("x-status-seen", try rs.get(":status") orelse "?");
        if (self.has("resp_local")) {
            try pw.sendLocalResponse(403, "probe_denied", "denied late", &.{}, -1);
            return .@"continue";
        }
        if (self.has("status")) try rs.replace(":status", "202");
        if (self.has("respbody")) try rs.remove("content-length");
        return .@"continue";
    }

    pub fn onResponseBody(self: *Stream, size: usize, eos: bool) !pw.Action {
        if (!self.has("respbody")) return .@"continue";
        if (!eos) return .pause;
        try pw.setBuffer(.response_body, 0, size, "rewritten body");
        return .@"continue";
    }
};

comptime {
    pw.plugin(Root);
}
