/* Globals, helpers bound by name and local calls: everything the loader relocates. */
typedef unsigned long long u64;

extern u64 host_add(u64 a, u64 b);
extern u64 host_record(const char *text, u64 len);

static const char greeting[] = "hello from rodata";
u64 counter = 40;                                  /* .data: 40 at the start of every run */
u64 scratch[64];                                   /* .bss: zero at the start of every run */
const char *names[] = {"alpha", "beta", "gamma"}; /* pointers to .rodata, relocated in .data */

static __attribute__((noinline)) u64 add3(u64 a, u64 b, u64 c)
{
    return a + b + c;
}

__attribute__((noinline)) u64 twice(u64 x)
{
    return add3(x, x, 0);
}

__attribute__((section("zeroserve.request"), used)) u64 request(void)
{
    counter += 1;
    return counter;
}

__attribute__((section("zeroserve.call.bss"), used)) u64 bss(u64 arg)
{
    u64 sum = 0;
    scratch[arg % 64] += arg;
    for (int i = 0; i < 64; i++)
        sum += scratch[i];
    return sum;
}

__attribute__((section("zeroserve.call.rodata"), used)) u64 rodata(void)
{
    return host_record(greeting, sizeof(greeting) - 1);
}

__attribute__((section("zeroserve.call.names"), used)) u64 name_initial(u64 index)
{
    return (u64)(unsigned char)names[index % 3][0];
}

__attribute__((section("zeroserve.call.local"), used)) u64 local(u64 x)
{
    return twice(x) + add3(x, 1, 2);
}

__attribute__((section("zeroserve.call.helper"), used)) u64 helper(u64 x)
{
    return host_add(x, 5);
}
