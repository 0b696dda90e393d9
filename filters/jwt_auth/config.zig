//! jwt_auth configuration (JSON; docs/filters/jwt_auth.md) turned into providers with keys.
const std = @import("std");
const pw = @import("proxy_wasm");
const keys = @import("keys.zig");

pub const JwksUri = struct {
    backend: []const u8, // the cluster (edgegw backend name) serving the JWKS
    path: []const u8,
    authority: ?[]const u8 = null,
    cache_seconds: u32 = 300,
    timeout_ms: u32 = 2000,
    min_refetch_seconds: u32 = 5, // an unknown kid triggers at most one fetch per this
};

pub const ProviderJson = struct {
    name: ?[]const u8 = null,
    issuer: []const u8,
    audiences: []const []const u8 = &.{},
    secret: ?[]const u8 = null, // HS*: the shared secret (UTF-8), or base64url with secret_base64
    secret_base64: bool = false,
    jwks: ?std.json.Value = null, // inline JWKS: an object or its JSON text
    jwks_uri: ?JwksUri = null,
};

pub const HeaderSource = struct { name: []const u8 = "authorization", prefix: []const u8 = "Bearer " };

pub const ConfigJson = struct {
    providers: []const ProviderJson = &.{},
    forward_claims: ?std.json.ArrayHashMap([]const u8) = null, // claim -> request header
    claims_header: []const u8 = "x-edgegw-claims", // "" disables
    clock_skew_seconds: u32 = 60,
    from_header: HeaderSource = .{},
    from_cookie: ?[]const u8 = null,
    from_query: ?[]const u8 = null,
    required_claims: []const []const u8 = &.{},
    required_scopes: []const []const u8 = &.{},
    allow_missing: bool = false,
    max_token_bytes: usize = 8192,
    realm: []const u8 = "edgegw",
};

pub const Provider = struct {
    json: *const ProviderJson,
    keys: []keys.Key = &.{},
    fetched_at_ms: u64 = 0, // 0: never fetched
    last_attempt_ms: u64 = 0,
    fetch_token: u32 = 0, // non-zero while a fetch is in flight

    pub fn findKey(self: *const Provider, alg: keys.Alg, kid: ?[]const u8) ?*const keys.Key {
        for (self.keys) |*k| if (k.accepts(alg, kid)) return k;
        return null;
    }
};

pub const Config = struct {
    parsed: std.json.Parsed(ConfigJson),
    providers: []Provider,

    pub fn raw(self: *const Config) *const ConfigJson {
        return &self.parsed.value;
    }
};

fn staticKeys(p: *const ProviderJson) !?[]keys.Key {
    const gpa = pw.allocator;
    if (p.secret) |secret| {
        const bytes = if (p.secret_base64) try keys.decodeB64(gpa, secret) else try gpa.dupe(u8, secret);
        const list = try gpa.alloc(keys.Key, 1);
        list[0] = .{ .kind = .hmac, .secret = bytes };
        return list;
    }
    if (p.jwks) |doc| {
        const value = switch (doc) {
            .string => |text| try std.json.parseFromSliceLeaky(std.json.Value, gpa, text, .{}),
            else => doc,
        };
        return try keys.fromJwks(gpa, value);
    }
    return null;
}

/// Parses and validates; logs the first problem and returns null on a bad config.
pub fn load(bytes: []const u8) ?Config {
    const parsed = pw.json.parse(ConfigJson, if (bytes.len == 0) "{}" else bytes) catch |err| {
        pw.log(.err, "jwt_auth: invalid configuration JSON: {s}", .{@errorName(err)});
        return null;
    };
    const c = &parsed.value;
    if (c.providers.len == 0) {
        pw.log(.err, "jwt_auth: at least one provider is required", .{});
        return null;
    }
    const providers = pw.allocator.alloc(Provider, c.providers.len) catch return null;
    for (c.providers, providers) |*p, *out| {
        out.* = .{ .json = p };
        const sources = @as(u8, @intFromBool(p.secret != null)) + @intFromBool(p.jwks != null) + @intFromBool(p.jwks_uri != null);
        if (sources != 1) {
            pw.log(.err, "jwt_auth: provider '{s}' needs exactly one of secret, jwks, jwks_uri", .{p.issuer});
            return null;
        }
        if (staticKeys(p) catch |err| {
            pw.log(.err, "jwt_auth: provider '{s}': bad key material: {s}", .{ p.issuer, @errorName(err) });
            return null;
        }) |list| out.keys = list;
    }
    return .{ .parsed = parsed, .providers = providers };
}
