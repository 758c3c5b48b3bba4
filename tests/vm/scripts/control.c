/* Control flow the host steers: endless loops for preemption, async helpers for suspension. */
typedef unsigned long long u64;

extern u64 fetch(u64 key);

/* Steps a 64-bit LCG `n` times from `seed` (n = 0: forever). */
__attribute__((section("zeroserve.call.lcg"), used)) u64 lcg(u64 seed, u64 n)
{
    u64 x = seed;
    for (u64 i = 0; n == 0 || i < n; i++)
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x;
}

/* Counts up at *counter forever. */
__attribute__((section("zeroserve.call.spin"), used)) u64 spin(volatile u64 *counter)
{
    for (;;)
        *counter += 1;
    return 0;
}

/* Values live in callee-saved registers and on the stack across two async helper calls. */
__attribute__((section("zeroserve.request"), used)) u64 request(u64 base)
{
    volatile u64 on_stack = base * 3;
    u64 kept = base + 11;
    u64 a = fetch(1);
    u64 b = fetch(a);
    return on_stack + kept * 1000 + a * 100 + b;
}
