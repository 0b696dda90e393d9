//! Verification keys (JWK, RFC 7517/7518) and signature checks for every JWS algorithm
//! jwt_auth accepts. A key is bound to one family (kty) so an algorithm can only ever use
//! a key of its own kind: no HS256-with-an-RSA-public-key confusion.
const std = @import("std");
const pw = @import("proxy_wasm");

const b64 = std.base64.url_safe_no_pad.Decoder;

pub const Alg = enum { HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA };
pub const Kind = enum { hmac, rsa, p256, p384, ed25519 };

pub fn parseAlg(name: []const u8) ?Alg {
    // "none" and anything unknown are refused by returning null.
    return std.meta.stringToEnum(Alg, name);
}

pub fn kindOf(alg: Alg) Kind {
    return switch (alg) {
        .HS256, .HS384, .HS512 => .hmac,
        .RS256, .RS384, .RS512, .PS256, .PS384, .PS512 => .rsa,
        .ES256 => .p256,
        .ES384 => .p384,
        .EdDSA => .ed25519,
    };
}

pub const Key = struct {
    kind: Kind,
    kid: ?[]const u8 = null,
    alg: ?Alg = null, // a JWK's "alg" pins the key to that algorithm
    secret: []const u8 = "", // hmac
    n: []const u8 = "", // rsa modulus, big-endian, no leading zeros
    e: []const u8 = "", // rsa exponent
    point: []const u8 = "", // EC: SEC1 uncompressed point; Ed25519: 32 bytes

    pub fn accepts(self: *const Key, alg: Alg, kid: ?[]const u8) bool {
        if (self.kind != kindOf(alg)) return false;
        if (self.alg) |a| if (a != alg) return false;
        if (kid) |want| if (self.kid) |have| return std.mem.eql(u8, want, have);
        return true;
    }
};

/// base64url without padding (a trailing "=" padding is tolerated, as most libraries do).
pub fn decodeB64(gpa: std.mem.Allocator, text: []const u8) ![]u8 {
    const s = std.mem.trimEnd(u8, text, "=");
    const out = try gpa.alloc(u8, try b64.calcSizeForSlice(s));
    try b64.decode(out, s);
    return out;
}

fn field(obj: std.json.ObjectMap, name: []const u8) ?[]const u8 {
    return pw.json.string(obj.get(name));
}

/// One JWK (an object of a JWKS "keys" array) into a Key owned by `gpa`; null when the
/// key is of a kind we do not verify with (or not for signatures).
pub fn fromJwk(gpa: std.mem.Allocator, v: std.json.Value) !?Key {
    const obj = switch (v) {
        .object => |o| o,
        else => return null,
    };
    if (field(obj, "use")) |use| if (!std.mem.eql(u8, use, "sig")) return null;
    const kty = field(obj, "kty") orelse return null;
    var key: Key = .{ .kind = .hmac };
    if (field(obj, "kid")) |kid| key.kid = try gpa.dupe(u8, kid);
    if (field(obj, "alg")) |a| key.alg = parseAlg(a) orelse return null;
    if (std.mem.eql(u8, kty, "oct")) {
        key.secret = try decodeB64(gpa, field(obj, "k") orelse return null);
    } else if (std.mem.eql(u8, kty, "RSA")) {
        key.kind = .rsa;
        const n = try decodeB64(gpa, field(obj, "n") orelse return null);
        key.n = std.mem.trimStart(u8, n, "\x00");
        key.e = std.mem.trimStart(u8, try decodeB64(gpa, field(obj, "e") orelse return null), "\x00");
    } else if (std.mem.eql(u8, kty, "EC")) {
        const crv = field(obj, "crv") orelse return null;
        const size: usize = if (std.mem.eql(u8, crv, "P-256")) 32 else if (std.mem.eql(u8, crv, "P-384")) 48 else return null;
        key.kind = if (size == 32) .p256 else .p384;
        const x = try decodeB64(gpa, field(obj, "x") orelse return null);
        const y = try decodeB64(gpa, field(obj, "y") orelse return null);
        if (x.len != size or y.len != size) return null;
        const point = try gpa.alloc(u8, 1 + 2 * size);
        point[0] = 0x04;
        @memcpy(point[1 .. 1 + size], x);
        @memcpy(point[1 + size ..], y);
        key.point = point;
    } else if (std.mem.eql(u8, kty, "OKP")) {
        const crv = field(obj, "crv") orelse return null;
        if (!std.mem.eql(u8, crv, "Ed25519")) return null;
        key.kind = .ed25519;
        key.point = try decodeB64(gpa, field(obj, "x") orelse return null);
        if (key.point.len != 32) return null;
    } else return null;
    return key;
}

/// Keys of a JWKS document ({"keys": [...]}) in `gpa`; unusable keys are skipped.
pub fn fromJwks(gpa: std.mem.Allocator, doc: std.json.Value) ![]Key {
    const list = pw.json.lookup(doc, &.{"keys"}) orelse return error.BadJwks;
    const items = switch (list) {
        .array => |a| a.items,
        else => return error.BadJwks,
    };
    var out: std.ArrayList(Key) = .empty;
    for (items) |item| {
        if (fromJwk(gpa, item) catch null) |k| try out.append(gpa, k);
    }
    return out.toOwnedSlice(gpa);
}

pub const VerifyError = error{InvalidSignature};

/// Checks `sig` over `msg` (the ASCII "header.payload") with `key` for `alg`.
pub fn verify(alg: Alg, key: *const Key, msg: []const u8, sig: []const u8) VerifyError!void {
    const hmac = std.crypto.auth.hmac.sha2;
    const sha2 = std.crypto.hash.sha2;
    switch (alg) {
        .HS256 => return verifyHmac(hmac.HmacSha256, key.secret, msg, sig),
        .HS384 => return verifyHmac(hmac.HmacSha384, key.secret, msg, sig),
        .HS512 => return verifyHmac(hmac.HmacSha512, key.secret, msg, sig),
        .RS256 => return verifyRsa(false, sha2.Sha256, key, msg, sig),
        .RS384 => return verifyRsa(false, sha2.Sha384, key, msg, sig),
        .RS512 => return verifyRsa(false, sha2.Sha512, key, msg, sig),
        .PS256 => return verifyRsa(true, sha2.Sha256, key, msg, sig),
        .PS384 => return verifyRsa(true, sha2.Sha384, key, msg, sig),
        .PS512 => return verifyRsa(true, sha2.Sha512, key, msg, sig),
        .ES256 => return verifyEcdsa(std.crypto.sign.ecdsa.EcdsaP256Sha256, key, msg, sig),
        .ES384 => return verifyEcdsa(std.crypto.sign.ecdsa.EcdsaP384Sha384, key, msg, sig),
        .EdDSA => {
            const Ed = std.crypto.sign.Ed25519;
            if (sig.len != Ed.Signature.encoded_length or key.point.len != 32) return error.InvalidSignature;
            const pk = Ed.PublicKey.fromBytes(key.point[0..32].*) catch return error.InvalidSignature;
            const s = Ed.Signature.fromBytes(sig[0..Ed.Signature.encoded_length].*);
            s.verify(msg, pk) catch return error.InvalidSignature;
        },
    }
}

fn verifyHmac(comptime H: type, secret: []const u8, msg: []const u8, sig: []const u8) VerifyError!void {
    if (sig.len != H.mac_length) return error.InvalidSignature;
    var mac: [H.mac_length]u8 = undefined;
    H.create(&mac, msg, secret);
    if (!std.crypto.timing_safe.eql([H.mac_length]u8, mac, sig[0..H.mac_length].*)) return error.InvalidSignature;
}

fn verifyRsa(comptime pss: bool, comptime Hash: type, key: *const Key, msg: []const u8, sig: []const u8) VerifyError!void {
    const rsa = std.crypto.Certificate.rsa;
    if (sig.len != key.n.len) return error.InvalidSignature;
    const pk = rsa.PublicKey.fromBytes(key.e, key.n) catch return error.InvalidSignature;
    switch (key.n.len) {
        inline 256, 384, 512 => |len| {
            const s: *const [len]u8 = sig[0..len];
            if (pss) {
                rsa.PSSSignature.verify(len, s, msg, pk, Hash) catch return error.InvalidSignature;
            } else {
                rsa.PKCS1v1_5Signature.verify(len, s, msg, pk, Hash) catch return error.InvalidSignature;
            }
        },
        else => return error.InvalidSignature, // RSA keys of 2048, 3072 or 4096 bits
    }
}

fn verifyEcdsa(comptime E: type, key: *const Key, msg: []const u8, sig: []const u8) VerifyError!void {
    // JWS carries ECDSA signatures as raw r || s (RFC 7518 §3.4), not DER.
    if (sig.len != E.Signature.encoded_length) return error.InvalidSignature;
    const pk = E.PublicKey.fromSec1(key.point) catch return error.InvalidSignature;
    const s = E.Signature.fromBytes(sig[0..E.Signature.encoded_length].*);
    s.verify(msg, pk) catch return error.InvalidSignature;
}
