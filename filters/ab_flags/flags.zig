//! Feature flag evaluation. A flag definition (JSON):
//!   {"enabled": bool, "rollout": percent 0..100,
//!    "countries": ["DE"], "headers": {"x-beta": ["1"]}, "claims": {"plan": ["pro"]}}
//! on = enabled AND every given targeting rule matches AND
//!      murmur3_32("<flag>:<key>", seed 0) % 10000 < round(rollout * 100)
const std = @import("std");
const pw = @import("proxy_wasm");
const Value = std.json.Value;

pub const Subject = struct {
    key: []const u8,
    country: []const u8,
    claims: ?Value,
};

/// Bucket in [0, 10000) — application SDKs reproduce it to agree with the gateway.
pub fn bucket(flag: []const u8, key: []const u8) u32 {
    const joined = pw.fmt("{s}:{s}", .{ flag, key });
    return pw.murmur3(joined, 0) % 10000;
}

fn listHas(list: Value, want: []const u8, ignore_case: bool) bool {
    const arr = switch (list) {
        .array => |a| a.items,
        .string => |s| return if (ignore_case) std.ascii.eqlIgnoreCase(s, want) else std.mem.eql(u8, s, want),
        else => return false,
    };
    for (arr) |item| {
        const s = pw.json.string(item) orelse continue;
        if (if (ignore_case) std.ascii.eqlIgnoreCase(s, want) else std.mem.eql(u8, s, want)) return true;
    }
    return false;
}

fn scalarText(v: Value) ?[]const u8 {
    return switch (v) {
        .string => |s| s,
        .bool => |b| if (b) "true" else "false",
        .integer => |i| pw.fmt("{d}", .{i}),
        else => null,
    };
}

pub fn isOn(name: []const u8, def: Value, subject: *const Subject) !bool {
    if (def == .bool) return def.bool; // "flag": true shorthand
    if (def != .object) return false;
    if (pw.json.boolean(pw.json.lookup(def, &.{"enabled"})) == false) return false;
    if (pw.json.lookup(def, &.{"countries"})) |c| {
        if (!listHas(c, subject.country, true)) return false;
    }
    if (pw.json.lookup(def, &.{"headers"})) |h| if (h == .object) {
        var it = h.object.iterator();
        while (it.next()) |kv| {
            const got = (try pw.request_headers.get(kv.key_ptr.*)) orelse return false;
            if (!listHas(kv.value_ptr.*, got, false)) return false;
        }
    };
    if (pw.json.lookup(def, &.{"claims"})) |cl| if (cl == .object) {
        const claims = subject.claims orelse return false;
        var it = cl.object.iterator();
        while (it.next()) |kv| {
            const v = pw.json.lookup(claims, &.{kv.key_ptr.*}) orelse return false;
            const ok = switch (v) {
                .array => |a| blk: {
                    for (a.items) |item| if (scalarText(item)) |t| if (listHas(kv.value_ptr.*, t, false)) break :blk true;
                    break :blk false;
                },
                else => if (scalarText(v)) |t| listHas(kv.value_ptr.*, t, false) else false,
            };
            if (!ok) return false;
        }
    };
    const rollout: f64 = switch (pw.json.lookup(def, &.{"rollout"}) orelse Value{ .integer = 100 }) {
        .integer => |i| @floatFromInt(i),
        .float => |f| f,
        else => 100,
    };
    const threshold: u32 = @intFromFloat(@round(std.math.clamp(rollout, 0, 100) * 100));
    return bucket(name, subject.key) < threshold;
}

/// "a=on,b=off" for every flag in `flags` (an object), sorted by name.
pub fn evaluate(flags: Value, subject: *const Subject) ![]const u8 {
    if (flags != .object) return "";
    const names = try pw.scratch().alloc([]const u8, flags.object.count());
    for (flags.object.keys(), names) |k, *n| n.* = k;
    std.mem.sort([]const u8, names, {}, struct {
        fn lt(_: void, a: []const u8, b: []const u8) bool {
            return std.mem.lessThan(u8, a, b);
        }
    }.lt);
    var out = std.ArrayList(u8).empty;
    for (names, 0..) |n, i| {
        const on = try isOn(n, flags.object.get(n).?, subject);
        if (i > 0) try out.append(pw.scratch(), ',');
        try out.print(pw.scratch(), "{s}={s}", .{ n, if (on) "on" else "off" });
    }
    return out.items;
}
