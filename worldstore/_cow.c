/* Copy-on-write of a writer's mapped layers in 2 MiB blocks, so written blocks keep 2 MiB pages.
 *
 * A MAP_PRIVATE file mapping copies a page on its first write, but only as a 4 KiB page: random access
 * to written data then misses the TLB (measured ~1.25x in-RAM numpy for scatters over 1 GiB). Here a
 * writer maps its layers MAP_SHARED and read-only. The first write into a block faults (SIGSEGV); the
 * handler copies the block into fresh anonymous memory that asks for transparent huge pages, and moves
 * that memory over the block (mremap): the write then goes to the process's own copy, the file keeps
 * the committed bytes. Faults outside registered regions go to the handler that was there before.
 *
 * Each block is in one of three states (one byte per block in the region's `dirty` array, which
 * worldstore reads):
 *   WS_FILE    the file's pages, read-only;
 *   WS_WRITTEN the process's own copy, writable, written since the last commit;
 *   WS_KEPT    the process's own copy, read-only, holding what the file holds (kept after a commit).
 * At commit, worldstore compares the WS_WRITTEN blocks with the file, writes the lines that differ into
 * the file, and then either keeps the copies (ws_cow_keep: they become WS_KEPT, and the next write into
 * one only marks it written again and lifts the protection: no copy, issue 15) or lets them go
 * (ws_cow_reset: the file is mapped back over them, and memory is freed).
 *
 * What this assumes: Linux (mremap, MAP_FIXED over part of a mapping); writes to a registered region
 * fault with SIGSEGV (SIGBUS on some systems: not used there); nothing else changes the protection of a
 * registered region; the file under a WS_KEPT block is changed only by commits, which write the bytes the
 * copy already holds. Only system calls and memcpy run in the handler. A spin lock orders faults of
 * several threads.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "_signals.h"

#define WS_REGIONS 4096
#define WS_BLOCK ((uintptr_t)2 << 20)
#define WS_FILE 0
#define WS_WRITTEN 1
#define WS_KEPT 2

typedef struct {
    uintptr_t start, end;   /* the mapping */
    int fd;                 /* the file, and the offset of `start` in it */
    int64_t offset;
    uint8_t *dirty;         /* one byte per block: WS_FILE, WS_WRITTEN or WS_KEPT */
    int used;
} ws_region;

static ws_region regions[WS_REGIONS];
static volatile int lock_word;
static struct sigaction previous;
static int installed;

static void lock(void) { while (__atomic_exchange_n(&lock_word, 1, __ATOMIC_ACQUIRE)) { } }
static void unlock(void) { __atomic_store_n(&lock_word, 0, __ATOMIC_RELEASE); }

static uintptr_t block_base(const ws_region *r) { return r->start & ~(WS_BLOCK - 1); }

/* The block `b` of region `r`: [lo, hi). */
static void block_range(const ws_region *r, int64_t b, uintptr_t *lo, uintptr_t *hi)
{
    uintptr_t base = block_base(r) + (uintptr_t)b * WS_BLOCK;
    *lo = base < r->start ? r->start : base;
    *hi = base + WS_BLOCK > r->end ? r->end : base + WS_BLOCK;
}

/* Make block `b` the process's own copy; 0 on success. */
static int own_block(ws_region *r, int64_t b)
{
    uintptr_t lo, hi;
    block_range(r, b, &lo, &hi);
    size_t len = hi - lo;
    /* Anonymous memory at the same offset within a 2 MiB block as `lo`, so the move keeps huge pages. */
    char *raw = mmap(NULL, len + 2 * WS_BLOCK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (raw == MAP_FAILED)
        return -1;
    uintptr_t dst = (((uintptr_t)raw + WS_BLOCK - 1) & ~(WS_BLOCK - 1)) + (lo & (WS_BLOCK - 1));
    if (dst > (uintptr_t)raw)
        munmap(raw, dst - (uintptr_t)raw);
    uintptr_t raw_end = (uintptr_t)raw + len + 2 * WS_BLOCK;
    if (raw_end > dst + len)
        munmap((void *)(dst + len), raw_end - (dst + len));
    madvise((void *)dst, len, MADV_HUGEPAGE);
    memcpy((void *)dst, (const void *)lo, len);
    if (mremap((void *)dst, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)lo) == MAP_FAILED) {
        munmap((void *)dst, len);
        return -1;
    }
    r->dirty[b] = WS_WRITTEN;
    return 0;
}

/* Block `b`, a kept copy, written again: writable, and marked written; 0 on success. */
static int rewrite_block(ws_region *r, int64_t b)
{
    uintptr_t lo, hi;
    block_range(r, b, &lo, &hi);
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t first = lo & ~(page - 1);
    if (mprotect((void *)first, hi - first, PROT_READ | PROT_WRITE) != 0)
        return -1;
    r->dirty[b] = WS_WRITTEN;
    return 0;
}

static void handler(int sig, siginfo_t *info, void *context)
{
    uintptr_t address = (uintptr_t)info->si_addr;
    for (int i = 0; i < WS_REGIONS; i++) {
        ws_region *r = &regions[i];
        if (!__atomic_load_n(&r->used, __ATOMIC_ACQUIRE) || address < r->start || address >= r->end)
            continue;
        int64_t b = (int64_t)((address - block_base(r)) / WS_BLOCK);
        lock();
        int done;
        switch (r->dirty[b]) {
        case WS_FILE: done = own_block(r, b); break;
        case WS_KEPT: done = rewrite_block(r, b); break;
        default: done = 0; /* another thread made it writable meanwhile */
        }
        unlock();
        if (done == 0)
            return;  /* the write runs again, into the copy */
        break;       /* could not copy (out of memory or mappings): fail as a plain fault would */
    }
    ws_chain(&previous, sig, info, context);
}

static int install(void)
{
    return ws_install(SIGSEGV, handler, &previous, &installed);
}

/* Register the mapping [start, start + length) of `fd` at `offset`, made read-only here; `dirty` has
 * ws_cow_blocks(start, length) bytes. Returns the region's id, or -1. */
int64_t ws_cow_register(void *start, int64_t length, int fd, int64_t offset, uint8_t *dirty)
{
    if (install() != 0)
        return -1;
    lock();
    int64_t id = -1;
    for (int i = 0; i < WS_REGIONS; i++) {
        if (!regions[i].used) {
            id = i;
            break;
        }
    }
    if (id >= 0) {
        /* A region left registered by a storage closed while views of it lived may overlap: forget it. */
        for (int i = 0; i < WS_REGIONS; i++) {
            if (regions[i].used && regions[i].start < (uintptr_t)start + (uintptr_t)length
                    && (uintptr_t)start < regions[i].end)
                __atomic_store_n(&regions[i].used, 0, __ATOMIC_RELEASE);
        }
        ws_region *r = &regions[id];
        r->start = (uintptr_t)start;
        r->end = (uintptr_t)start + (uintptr_t)length;
        r->fd = fd;
        r->offset = offset;
        r->dirty = dirty;
        __atomic_store_n(&r->used, 1, __ATOMIC_RELEASE);
    }
    unlock();
    if (id >= 0 && mprotect(start, (size_t)length, PROT_READ) != 0) {
        __atomic_store_n(&regions[id].used, 0, __ATOMIC_RELEASE);
        return -1;
    }
    return id;
}

int64_t ws_cow_blocks(void *start, int64_t length)
{
    uintptr_t base = (uintptr_t)start & ~(WS_BLOCK - 1);
    return (int64_t)(((uintptr_t)start + (uintptr_t)length - base + WS_BLOCK - 1) / WS_BLOCK);
}

/* Map the file back over every copied block (read-only): they read what the file holds, and their
 * memory is freed. 0, or -1. */
int ws_cow_reset(int64_t id)
{
    ws_region *r = &regions[id];
    int64_t blocks = ws_cow_blocks((void *)r->start, (int64_t)(r->end - r->start));
    int result = 0;
    lock();
    for (int64_t b = 0; b < blocks; b++) {
        if (r->dirty[b] == WS_FILE)
            continue;
        uintptr_t lo, hi;
        block_range(r, b, &lo, &hi);
        void *mapped = mmap((void *)lo, hi - lo, PROT_READ, MAP_SHARED | MAP_FIXED, r->fd,
                            (off_t)(r->offset + (int64_t)(lo - r->start)));
        if (mapped == MAP_FAILED) {
            result = -1;
            continue;
        }
        madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
        r->dirty[b] = WS_FILE;
    }
    unlock();
    return result;
}

/* After a commit wrote them into the file: keep the written copies, read-only (WS_KEPT), so the next
 * write into one costs a fault and an mprotect, not a copy. Returns the bytes of copies the region
 * holds, or -1 (an mprotect failed: call ws_cow_reset). */
int64_t ws_cow_keep(int64_t id)
{
    ws_region *r = &regions[id];
    int64_t blocks = ws_cow_blocks((void *)r->start, (int64_t)(r->end - r->start));
    int64_t kept = 0;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    lock();
    for (int64_t b = 0; b < blocks; b++) {
        if (r->dirty[b] == WS_FILE)
            continue;
        uintptr_t lo, hi;
        block_range(r, b, &lo, &hi);
        if (r->dirty[b] == WS_WRITTEN) {
            uintptr_t first = lo & ~(page - 1);
            if (mprotect((void *)first, hi - first, PROT_READ) != 0) {
                unlock();
                return -1;
            }
            r->dirty[b] = WS_KEPT;
        }
        kept += (int64_t)(hi - lo);
    }
    unlock();
    return kept;
}

/* Forget the region (its mapping is about to be unmapped, or stays with its copies if views remain). */
void ws_cow_unregister(int64_t id)
{
    lock();
    __atomic_store_n(&regions[id].used, 0, __ATOMIC_RELEASE);
    unlock();
}

