//! GCRA (generic cell rate algorithm), the token-bucket equivalent that needs one number
//! per key: the theoretical arrival time (TAT). Local mode keeps it in proxy-wasm shared
//! data and updates it with compare-and-swap so concurrent workers agree.
const std = @import("std");
const pw = @import("proxy_wasm");

pub const Result = struct {
    allowed: bool,
    remaining: u64,
    reset_ms: u64,
    retry_after_ms: u64,
    limit: u64,
};

pub const Params = struct { rate: u64, burst: u64, period_ms: u64, cost: u64 };

/// One GCRA step. `tat_us` is the stored TAT (0 = none); returns the result and new TAT.
pub fn step(tat_us: u64, now_us: u64, p: Params) struct { result: Result, tat_us: u64 } {
    // emission interval T: time one request "costs"; tau: how far TAT may run ahead of now.
    const t_us: u64 = @max(1, (p.period_ms *| 1000) / @max(1, p.rate));
    const tau: u64 = t_us *| p.burst;
    const base = @max(tat_us, now_us);
    const new_tat = base +| (t_us *| p.cost);
    const allow_at = if (new_tat > tau) new_tat - tau else 0;
    if (allow_at > now_us) {
        return .{ .tat_us = tat_us, .result = .{
            .allowed = false,
            .remaining = 0,
            .reset_ms = divCeil(base - now_us, 1000),
            .retry_after_ms = divCeil(allow_at - now_us, 1000),
            .limit = p.burst,
        } };
    }
    const ahead = new_tat - now_us;
    return .{ .tat_us = new_tat, .result = .{
        .allowed = true,
        .remaining = if (tau > ahead) (tau - ahead) / t_us else 0,
        .reset_ms = divCeil(ahead, 1000),
        .retry_after_ms = 0,
        .limit = p.burst,
    } };
}

pub fn divCeil(a: u64, b: u64) u64 {
    return a / b + @intFromBool(a % b != 0);
}

/// Applies one request against shared data key `key`, retrying on CAS conflicts.
pub fn local(key: []const u8, p: Params) pw.Error!Result {
    const now_us = pw.currentTimeNanos() / 1000;
    var attempt: u32 = 0;
    while (attempt < 8) : (attempt += 1) {
        const cur = try pw.getSharedData(key);
        const tat = if (cur) |c| std.fmt.parseInt(u64, c.value, 10) catch 0 else 0;
        const out = step(tat, now_us, p);
        if (!out.result.allowed) return out.result;
        var buf: [24]u8 = undefined;
        const text = std.fmt.bufPrint(&buf, "{d}", .{out.tat_us}) catch return error.InternalFailure;
        // cas 0 on a missing key inserts; a concurrent first insert may win (one extra
        // request allowed once per key), which the ABI cannot express more strictly.
        pw.setSharedData(key, text, if (cur) |c| c.cas else 0) catch |err| switch (err) {
            error.CasMismatch => continue,
            else => return err,
        };
        return out.result;
    }
    return error.CasMismatch;
}
