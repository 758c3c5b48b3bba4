/* Raw memory access driven by the host, to probe the cage from compiled code. */
typedef unsigned long long u64;

static const char secret[] = "read-only data";

extern u64 host_read(const void *ptr, u64 len);
extern u64 host_write(void *ptr, u64 len);

__attribute__((section("zeroserve.call.peek"), used)) u64 peek(u64 addr)
{
    return *(volatile u64 *)addr;
}

__attribute__((section("zeroserve.call.poke"), used)) u64 poke(u64 addr, u64 value)
{
    *(volatile u64 *)addr = value;
    return 0;
}

__attribute__((section("zeroserve.call.xadd"), used)) u64 xadd(u64 addr, u64 value)
{
    __sync_fetch_and_add((u64 *)addr, value);
    return 0;
}

__attribute__((section("zeroserve.call.rodata_addr"), used)) u64 rodata_addr(void)
{
    return (u64)secret;
}

__attribute__((section("zeroserve.call.read"), used)) u64 read(u64 addr, u64 len)
{
    return host_read((const void *)addr, len);
}

__attribute__((section("zeroserve.call.write"), used)) u64 write(u64 addr, u64 len)
{
    return host_write((void *)addr, len);
}
