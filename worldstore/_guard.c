/* Mapped files cut short under the process: a fault becomes zeros and a count, not a crash.
 *
 * A file that is mapped and then made shorter (`truncate`, or `cp` of a smaller file over it: the same
 * inode) makes every access to a mapped page past its new end raise SIGBUS, which ends the process. A
 * storage library must not die of what a user can do to a file with ordinary tools. worldstore
 * registers every file mapping it makes (ws_guard_register). A SIGBUS inside one maps anonymous,
 * zero-filled memory over the faulting page and the rest of the mapping after it (one call, so a
 * scan over a cut file adds no more than a few mappings), counts the fault for that mapping, and
 * returns: the access runs again and reads zeros. worldstore then asks, at each commit, refresh and
 * checked read, whether one of its mappings was hit (ws_guard_faults), and raises or reopens: the zeros
 * are never committed or handed out as data. Faults outside registered mappings go to the handler that
 * was there before, or end the process as they would have.
 *
 * Only mmap and atomics run in the handler. Registration takes a spin lock that the handler never takes.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "_signals.h"

#define WS_GUARDS 8192

typedef struct {
    uintptr_t start, end;   /* the mapping */
    int64_t faults;         /* SIGBUS faults taken in it */
    int used;
} ws_guard;

static ws_guard guards[WS_GUARDS];
static volatile int guard_lock;
static int64_t total_faults;
static uintptr_t page_size;
static struct sigaction previous_bus;
static int bus_installed;

static void bus_handler(int sig, siginfo_t *info, void *context)
{
    uintptr_t address = (uintptr_t)info->si_addr;
    for (int i = 0; i < WS_GUARDS; i++) {
        ws_guard *g = &guards[i];
        if (!__atomic_load_n(&g->used, __ATOMIC_ACQUIRE) || address < g->start || address >= g->end)
            continue;
        uintptr_t lo = address & ~(page_size - 1);
        if (mmap((void *)lo, g->end - lo, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
                == MAP_FAILED)
            break;
        __atomic_add_fetch(&g->faults, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&total_faults, 1, __ATOMIC_RELAXED);
        return;  /* the access runs again, on zeros */
    }
    ws_chain(&previous_bus, sig, info, context);
}

static int install_bus(void)
{
    page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
    return ws_install(SIGBUS, bus_handler, &previous_bus, &bus_installed);
}

/* Guard the file mapping [start, start + length). Returns its id, or -1 (no room, or no handler). */
int64_t ws_guard_register(void *start, int64_t length)
{
    if (length <= 0 || install_bus() != 0)
        return -1;
    while (__atomic_exchange_n(&guard_lock, 1, __ATOMIC_ACQUIRE)) { }
    int64_t id = -1;
    for (int i = 0; i < WS_GUARDS; i++) {
        if (!guards[i].used) {
            guards[i].start = (uintptr_t)start;
            guards[i].end = (uintptr_t)start + (uintptr_t)length;
            guards[i].faults = 0;
            __atomic_store_n(&guards[i].used, 1, __ATOMIC_RELEASE);
            id = i;
            break;
        }
    }
    __atomic_store_n(&guard_lock, 0, __ATOMIC_RELEASE);
    return id;
}

/* Forget guard `id` (its mapping is gone). */
void ws_guard_unregister(int64_t id)
{
    if (id >= 0 && id < WS_GUARDS)
        __atomic_store_n(&guards[id].used, 0, __ATOMIC_RELEASE);
}

/* Faults taken in the guarded mappings that overlap [start, start + length). */
int64_t ws_guard_faults(void *start, int64_t length)
{
    uintptr_t lo = (uintptr_t)start, hi = lo + (uintptr_t)length;
    int64_t count = 0;
    for (int i = 0; i < WS_GUARDS; i++) {
        ws_guard *g = &guards[i];
        if (__atomic_load_n(&g->used, __ATOMIC_ACQUIRE) && g->start < hi && lo < g->end)
            count += __atomic_load_n(&g->faults, __ATOMIC_RELAXED);
    }
    return count;
}

/* Faults taken in any guarded mapping since the process started. */
int64_t ws_guard_total(void)
{
    return __atomic_load_n(&total_faults, __ATOMIC_RELAXED);
}
