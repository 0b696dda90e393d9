//! Helpers filters share: JSON (std.json), problem+json replies (RFC 9457), murmur3,
//! cookie and header-list parsing.
const std = @import("std");
const memory = @import("memory.zig");
const host = @import("host.zig");

pub const json = struct {
    pub const Value = std.json.Value;

    /// Parses a configuration into `T` with its own arena (keep the Parsed, deinit to free).
    /// Unknown fields are ignored so configs can grow without breaking old filters.
    pub fn parse(comptime T: type, bytes: []const u8) !std.json.Parsed(T) {
        return std.json.parseFromSlice(T, memory.allocator, bytes, .{
            .ignore_unknown_fields = true,
            .allocate = .alloc_always,
        });
    }

    /// Parses into scratch memory (valid until the callback returns).
    pub fn parseScratch(comptime T: type, bytes: []const u8) !T {
        return std.json.parseFromSliceLeaky(T, memory.scratch(), bytes, .{
            .ignore_unknown_fields = true,
            .allocate = .alloc_always,
        });
    }

    /// A dynamic JSON value in scratch memory.
    pub fn parseValue(bytes: []const u8) !Value {
        return std.json.parseFromSliceLeaky(Value, memory.scratch(), bytes, .{ .allocate = .alloc_always });
    }

    /// Follows object keys; null when a step is missing or not an object.
    pub fn lookup(v: Value, path: []const []const u8) ?Value {
        var cur = v;
        for (path) |key| {
            switch (cur) {
                .object => |o| cur = o.get(key) orelse return null,
                else => return null,
            }
        }
        return cur;
    }

    pub fn string(v: ?Value) ?[]const u8 {
        const x = v orelse return null;
        return switch (x) {
            .string => |s| s,
            else => null,
        };
    }

    pub fn integer(v: ?Value) ?i64 {
        const x = v orelse return null;
        return switch (x) {
            .integer => |i| i,
            .float => |f| if (std.math.isFinite(f) and @abs(f) < 9.0e18) @intFromFloat(f) else null,
            else => null,
        };
    }

    pub fn boolean(v: ?Value) ?bool {
        const x = v orelse return null;
        return switch (x) {
            .bool => |b| b,
            else => null,
        };
    }

    /// Serializes any value into scratch memory.
    pub fn stringify(v: anytype) ![]u8 {
        return std.json.Stringify.valueAlloc(memory.scratch(), v, .{});
    }
};

/// Sends an RFC 9457 problem+json local response. `extra` headers are added as given.
pub fn sendProblem(status: u32, title: []const u8, detail: []const u8, extra: []const host.Header) host.Error!void {
    const Problem = struct { type: []const u8, title: []const u8, status: u32, detail: []const u8 };
    const body = json.stringify(Problem{ .type = "about:blank", .title = title, .status = status, .detail = detail }) catch return error.OutOfMemory;
    const hdrs = try memory.scratch().alloc(host.Header, extra.len + 1);
    hdrs[0] = .{ .name = "content-type", .value = "application/problem+json" };
    @memcpy(hdrs[1..], extra);
    try host.sendLocalResponse(status, detailsToken(title), body, hdrs, -1);
}

fn detailsToken(title: []const u8) []const u8 {
    // Envoy requires response code details without spaces; keep it a stable token.
    _ = title;
    return "edgegw_filter";
}

/// murmur3_x86_32 (Austin Appleby), the function application SDKs reproduce buckets with.
pub fn murmur3(data: []const u8, seed: u32) u32 {
    return std.hash.Murmur3_32.hashWithSeed(data, seed);
}

/// A cookie's value from a Cookie header ("a=1; b=2"); null when absent.
pub fn cookieValue(cookie_header: []const u8, name: []const u8) ?[]const u8 {
    var it = std.mem.splitScalar(u8, cookie_header, ';');
    while (it.next()) |part| {
        const kv = std.mem.trim(u8, part, " \t");
        const eq = std.mem.indexOfScalar(u8, kv, '=') orelse continue;
        if (std.mem.eql(u8, kv[0..eq], name)) return std.mem.trim(u8, kv[eq + 1 ..], "\"");
    }
    return null;
}

/// Items of a comma-separated header value, trimmed, empty items skipped.
pub fn listItems(value: []const u8) std.mem.TokenIterator(u8, .scalar) {
    return std.mem.tokenizeScalar(u8, value, ',');
}

pub fn trim(s: []const u8) []const u8 {
    return std.mem.trim(u8, s, " \t");
}

/// Formats into scratch memory ("" on failure, which only happens when out of memory).
pub fn fmt(comptime f: []const u8, args: anytype) []const u8 {
    return std.fmt.allocPrint(memory.scratch(), f, args) catch "";
}
