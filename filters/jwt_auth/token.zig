//! A compact JWS (header.payload.signature) and its registered claims (RFC 7519 §4.1).
const std = @import("std");
const pw = @import("proxy_wasm");
const keys = @import("keys.zig");

pub const Token = struct {
    alg: keys.Alg,
    kid: ?[]const u8,
    signed: []const u8, // "header.payload", what the signature covers
    payload_b64: []const u8, // the claims as base64url JSON (forwarded as is)
    signature: []const u8,
    claims: std.json.ObjectMap,

    pub fn claim(self: *const Token, name: []const u8) ?std.json.Value {
        return self.claims.get(name);
    }
};

pub const ParseError = error{ Malformed, BadAlgorithm };

/// Parses without verifying (all in scratch memory). `alg: none` and unknown algorithms
/// are refused here.
pub fn parse(text: []const u8) ParseError!Token {
    const first = std.mem.indexOfScalar(u8, text, '.') orelse return error.Malformed;
    const second_rel = std.mem.indexOfScalar(u8, text[first + 1 ..], '.') orelse return error.Malformed;
    const second = first + 1 + second_rel;
    if (std.mem.indexOfScalar(u8, text[second + 1 ..], '.') != null) return error.Malformed;
    const scratch = pw.scratch();
    const header_json = keys.decodeB64(scratch, text[0..first]) catch return error.Malformed;
    const payload_json = keys.decodeB64(scratch, text[first + 1 .. second]) catch return error.Malformed;
    const signature = keys.decodeB64(scratch, text[second + 1 ..]) catch return error.Malformed;
    const header = pw.json.parseValue(header_json) catch return error.Malformed;
    const payload = pw.json.parseValue(payload_json) catch return error.Malformed;
    if (header != .object) return error.Malformed;
    const claims = switch (payload) {
        .object => |o| o,
        else => return error.Malformed,
    };
    const alg_name = pw.json.string(header.object.get("alg")) orelse return error.Malformed;
    const alg = keys.parseAlg(alg_name) orelse return error.BadAlgorithm;
    const kid = if (header.object.get("kid")) |k| (pw.json.string(k) orelse return error.Malformed) else null;
    return .{
        .alg = alg,
        .kid = kid,
        .signed = text[0..second],
        .payload_b64 = text[first + 1 .. second],
        .signature = signature,
        .claims = claims,
    };
}

/// A NumericDate as most JWT libraries read it (PyJWT: `int(value)`): a JSON number
/// (fractions truncated), or a string holding an integer, or a boolean (0/1).
fn number(v: std.json.Value) ?f64 {
    return switch (v) {
        .integer => |i| @floatFromInt(i),
        .float => |f| if (std.math.isFinite(f)) @trunc(f) else null,
        .number_string, .string => |s| blk: {
            const n = std.fmt.parseInt(i64, std.mem.trim(u8, s, " \t\n\r"), 10) catch break :blk null;
            break :blk @floatFromInt(n);
        },
        .bool => |b| if (b) 1 else 0,
        else => null,
    };
}

/// Why a token's time claims reject it, or null when they are fine. `now` in seconds.
pub fn checkTimes(t: *const Token, now: f64, skew: f64) ?[]const u8 {
    if (t.claim("exp")) |v| {
        const exp = number(v) orelse return "exp is not a number";
        if (exp <= now - skew) return "token expired";
    }
    if (t.claim("nbf")) |v| {
        const nbf = number(v) orelse return "nbf is not a number";
        if (nbf > now + skew) return "token not yet valid";
    }
    if (t.claim("iat")) |v| {
        const iat = number(v) orelse return "iat is not a number";
        if (iat > now + skew) return "token issued in the future";
    }
    return null;
}

/// True when `aud` (a string or an array of strings) names one of `audiences`.
pub fn audienceOk(t: *const Token, audiences: []const []const u8) bool {
    if (audiences.len == 0) return t.claim("aud") == null;
    const aud = t.claim("aud") orelse return false;
    switch (aud) {
        .string => |s| return contains(audiences, s),
        .array => |a| {
            var any = false;
            for (a.items) |item| {
                const s = pw.json.string(item) orelse return false;
                if (contains(audiences, s)) any = true;
            }
            return any;
        },
        else => return false,
    }
}

fn contains(list: []const []const u8, s: []const u8) bool {
    for (list) |x| if (std.mem.eql(u8, x, s)) return true;
    return false;
}

/// True when every scope is granted by `scope` (space-separated) or `scp` (array).
pub fn hasScopes(t: *const Token, wanted: []const []const u8) bool {
    for (wanted) |w| {
        var found = false;
        if (pw.json.string(t.claim("scope"))) |s| {
            var it = std.mem.tokenizeScalar(u8, s, ' ');
            while (it.next()) |item| if (std.mem.eql(u8, item, w)) {
                found = true;
            };
        }
        if (!found) if (t.claim("scp")) |scp| if (scp == .array) {
            for (scp.array.items) |item| if (pw.json.string(item)) |s| if (std.mem.eql(u8, s, w)) {
                found = true;
            };
        };
        if (!found) return false;
    }
    return true;
}
