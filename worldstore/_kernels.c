/*
 * worldstore's compiled kernels: loops that numpy can only express as several
 * passes over memory (or not at all), each with a pure-numpy twin in
 * worldstore/_native.py that is the reference in the tests.
 *
 * Plain C, no Python API: the library is loaded with ctypes and given raw
 * pointers to C-contiguous numpy arrays. Built by setup.py with -O2 and
 * without -ffast-math: results must match numpy bit for bit (one IEEE
 * multiply per decay, comparisons in the layer's own precision).
 */
#include <stdint.h>
#include <string.h>
#include <math.h>

/*
 * The few things C compilers spell differently (issue 14: gcc and clang on
 * Linux and macOS, mingw and MSVC on Windows). Every function worldstore loads
 * is WS_EXPORT: a Windows DLL exports only what is marked.
 */
#if defined(_WIN32)
#define WS_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define WS_EXPORT __attribute__((visibility("default")))
#else
#define WS_EXPORT
#endif

#if defined(_MSC_VER)
#include <intrin.h>
#if defined(_M_X64) || defined(_M_IX86)
#include <xmmintrin.h>
/* prefetcht2, as __builtin_prefetch(p, 0, 1) gives on x86 */
#define WS_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T2)
#else
#define WS_PREFETCH(p) ((void)(p))
#endif
#define WS_FETCH_ADD(p, v) _InterlockedExchangeAdd64((volatile long long *)(p), (v))
#else
#define WS_PREFETCH(p) __builtin_prefetch((p), 0, 1)
#define WS_FETCH_ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#endif

#if defined(_WIN32)
#include <windows.h>
typedef HANDLE ws_thread;
#else
#include <pthread.h>
typedef pthread_t ws_thread;
#endif

/*
 * Merge the sorted cells b (with values) into the sorted cells a, in place:
 * a's buffers hold na entries and have room for na + nb. No cell is in both.
 * The merge runs from the back, so it never overwrites an entry of a it has
 * yet to read, and it needs no new memory (on machines where page faults are
 * dear, that is most of the cost of a merge). Branch-free in the choice of
 * input: a merge of random cells would mispredict half of its branches.
 */
#define WS_MERGE_BACK(NAME, UINT)                                                               \
static void NAME(int64_t *ac, UINT *av, int64_t na, const int64_t *bc, const UINT *bv, int64_t nb) \
{                                                                                               \
    int64_t i = na - 1, j = nb - 1, k = na + nb - 1;                                            \
    while (j >= 0 && i >= 0) {                                                                  \
        int64_t ca = ac[i], cb = bc[j];                                                         \
        int take_a = ca > cb;                                                                   \
        UINT va = av[i], vb = bv[j];                                                            \
        ac[k] = take_a ? ca : cb;                                                               \
        av[k] = take_a ? va : vb;                                                               \
        i -= take_a;                                                                            \
        j -= 1 - take_a;                                                                        \
        k--;                                                                                    \
    }                                                                                           \
    for (; j >= 0; j--, k--) {                                                                  \
        ac[k] = bc[j];                                                                          \
        av[k] = bv[j];                                                                          \
    }                                                                                           \
}

/*
 * Drop the entries whose value is zero (+0.0 or -0.0: every bit but the sign
 * clear), in place, keeping the order. Returns how many are left.
 */
#define WS_COMPACT(NAME, UINT, SIGNLESS)                                                        \
static int64_t NAME(int64_t *cells, UINT *values, int64_t n)                                    \
{                                                                                               \
    int64_t k = 0;                                                                              \
    for (int64_t i = 0; i < n; i++) {                                                           \
        UINT v = values[i];                                                                     \
        cells[k] = cells[i];                                                                    \
        values[k] = v;                                                                          \
        k += (v & SIGNLESS) != 0;                                                               \
    }                                                                                           \
    return k;                                                                                   \
}

WS_MERGE_BACK(merge_back16, uint16_t)
WS_MERGE_BACK(merge_back32, uint32_t)
WS_MERGE_BACK(merge_back64, uint64_t)
WS_COMPACT(compact16, uint16_t, (uint16_t)0x7fffu)
WS_COMPACT(compact32, uint32_t, 0x7fffffffu)
WS_COMPACT(compact64, uint64_t, 0x7fffffffffffffffull)

WS_EXPORT int ws_merge_back(int64_t *a_cells, void *a_values, int64_t na, const int64_t *b_cells, const void *b_values,
                  int64_t nb, int64_t itemsize)
{
    switch (itemsize) {
    case 2: merge_back16(a_cells, a_values, na, b_cells, b_values, nb); return 0;
    case 4: merge_back32(a_cells, a_values, na, b_cells, b_values, nb); return 0;
    case 8: merge_back64(a_cells, a_values, na, b_cells, b_values, nb); return 0;
    default: return -1;
    }
}

WS_EXPORT int64_t ws_compact(int64_t *cells, void *values, int64_t n, int64_t itemsize)
{
    switch (itemsize) {
    case 2: return compact16(cells, values, n);
    case 4: return compact32(cells, values, n);
    case 8: return compact64(cells, values, n);
    default: return -1;
    }
}

/*
 * For ascending queries, the lower bound of each in the sorted array cells
 * (at) and whether it is there (hit). Galloping from the previous answer:
 * O(log gap) per query, and the memory it touches moves forward.
 */
WS_EXPORT void ws_locate_sorted(const int64_t *cells, int64_t n, const int64_t *queries, int64_t nq,
                      int64_t *at, uint8_t *hit)
{
    int64_t lo = 0;
    for (int64_t q = 0; q < nq; q++) {
        int64_t key = queries[q];
        /* Invariant: every cell before lo is < key (queries ascend). */
        int64_t step = 1, hi = lo;
        while (hi < n && cells[hi] < key) {
            lo = hi + 1;
            hi += step;
            step <<= 1;
        }
        if (hi > n)
            hi = n;
        /* Now cells[lo - 1] < key (or lo == 0) and (hi == n or cells[hi] >= key). */
        while (lo < hi) {
            int64_t mid = lo + ((hi - lo) >> 1);
            if (cells[mid] < key)
                lo = mid + 1;
            else
                hi = mid;
        }
        at[q] = lo;
        hit[q] = (uint8_t)(lo < n && cells[lo] == key);
    }
}

/*
 * Decay in place: v <- v * factor, then v <- v * (|v| >= threshold), the
 * same two IEEE operations numpy's decay does (so a dropped negative value
 * becomes -0.0 there and here). threshold <= 0 keeps every value.
 * Returns how many values are zero afterwards. Written so that the compiler
 * vectorises it: blocks with a 32-bit count, no branch in the loop.
 */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define WS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define WS_CLONES
#endif

#define WS_DECAY(NAME, REAL, ABS, COUNT)                                                        \
WS_EXPORT WS_CLONES int64_t NAME(REAL *values, int64_t n, REAL factor, REAL threshold)                              \
{                                                                                               \
    int64_t zeros = 0;                                                                          \
    REAL floor = threshold > 0 ? threshold : (REAL)0;                                           \
    for (int64_t start = 0; start < n; start += 4096) {                                         \
        int64_t end = start + 4096 < n ? start + 4096 : n;                                      \
        COUNT block = 0;                                                                        \
        for (int64_t i = start; i < end; i++) {                                                 \
            REAL v = values[i] * factor;                                                        \
            v = v * (ABS(v) >= floor ? (REAL)1 : (REAL)0);                                      \
            values[i] = v;                                                                      \
            block += (COUNT)(v == (REAL)0);                                                     \
        }                                                                                       \
        zeros += block;                                                                         \
    }                                                                                           \
    return zeros;                                                                               \
}

WS_DECAY(ws_decay_f32, float, fabsf, int32_t)
WS_DECAY(ws_decay_f64, double, fabs, int64_t)

/*
 * Where each block of 2**shift consecutive cells starts in the sorted cells:
 * starts[b] = the first position whose cell is >= b << shift, for b in
 * [0, blocks]. One forward pass.
 */
WS_EXPORT void ws_block_starts(const int64_t *cells, int64_t n, int64_t shift, int64_t *starts, int64_t blocks)
{
    int64_t position = 0;
    for (int64_t b = 0; b <= blocks; b++) {
        int64_t first = b << shift;
        while (position < n && cells[position] < first)
            position++;
        starts[b] = position;
    }
}

/*
 * Tag the hash slots of cells (Fibonacci hashing: slot = cell * K >> (64 - bits)):
 * a slot that is empty (0) or already has this tag takes it; any other
 * becomes `several`. What worldstore/storage/_cells.py's CellTags._mark does
 * with numpy, without its temporaries.
 */
WS_EXPORT void ws_tags_mark(const int64_t *cells, int64_t n, uint8_t *slots, int64_t bits, uint8_t tag, uint8_t several)
{
    const uint64_t multiplier = 0x9E3779B97F4A7C15ull;
    const int shift = (int)(64 - bits);
    for (int64_t i = 0; i < n; i++) {
        uint64_t slot = ((uint64_t)cells[i] * multiplier) >> shift;
        uint8_t found = slots[slot];
        slots[slot] = (found == 0 || found == tag) ? tag : several;
    }
}

/* IEEE half to single precision, exactly (as numpy converts). */
static inline float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
    float result;
    if (exponent == 0) {
        result = (float)mantissa * (1.0f / 16777216.0f); /* subnormal (or zero): mantissa * 2**-24 */
        memcpy(&bits, &result, 4);
        bits |= sign;
    } else if (exponent == 31) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    }
    memcpy(&result, &bits, 4);
    return result;
}

/* Source element kinds of ws_gather_f32 (worldstore/_native.py: GATHER_KINDS). */
enum { K_F32, K_F64, K_F16, K_U8, K_I8, K_I16, K_U16, K_I32, K_U32, K_I64, K_U64 };

static void convert_row(float *out, const char *src, int64_t count, int kind)
{
    int64_t k;
    switch (kind) {
    case K_F32: memcpy(out, src, (size_t)count * 4); break;
    case K_F64: for (k = 0; k < count; k++) out[k] = (float)((const double *)src)[k]; break;
    case K_F16: for (k = 0; k < count; k++) out[k] = half_to_float(((const uint16_t *)src)[k]); break;
    case K_U8: for (k = 0; k < count; k++) out[k] = (float)((const uint8_t *)src)[k]; break;
    case K_I8: for (k = 0; k < count; k++) out[k] = (float)((const int8_t *)src)[k]; break;
    case K_I16: for (k = 0; k < count; k++) out[k] = (float)((const int16_t *)src)[k]; break;
    case K_U16: for (k = 0; k < count; k++) out[k] = (float)((const uint16_t *)src)[k]; break;
    case K_I32: for (k = 0; k < count; k++) out[k] = (float)((const int32_t *)src)[k]; break;
    case K_U32: for (k = 0; k < count; k++) out[k] = (float)((const uint32_t *)src)[k]; break;
    case K_I64: for (k = 0; k < count; k++) out[k] = (float)((const int64_t *)src)[k]; break;
    default: for (k = 0; k < count; k++) out[k] = (float)((const uint64_t *)src)[k]; break;
    }
}

static void fill(float *out, int64_t count, float value)
{
    for (int64_t k = 0; k < count; k++)
        out[k] = value;
}

/*
 * Per-agent windows of several layers into float32: out + i * agent_stride +
 * channel_offsets[c] is agent i's (side x side) window of channel c,
 * side = 2 * radius + 1, rows contiguous. The window of position (y, x)
 * covers rows y-radius..y+radius and columns x-radius..x+radius; cells
 * outside the world take the channel's pad. Channel c reads sources[c],
 * (H, W), or with layer_strides[c] > 0 an (agents, H, W) layer of which agent
 * i reads layer layer_index[i]. A window row inside the world is one copy
 * (float32 sources: memcpy) or one converting loop. Up to `threads` threads
 * take the agents in chunks of about chunk_rows window rows, each writing its
 * chunk's part of out in order. Chunks, not halves: a thread that starts late
 * or runs slower (on a virtual machine the hypervisor may be running
 * something else on that CPU) then takes fewer agents instead of finishing
 * last.
 *
 * Short rows (132 bytes at radius 16) each lie in another part of memory,
 * so copying them waits on memory latency, not bandwidth, and the hardware
 * prefetchers cannot guess the next row. The gather therefore asks for the
 * row LOOKAHEAD rows ahead of the one it copies (a second cursor over the
 * same agent, channel, row order) with a prefetch into L2
 * (__builtin_prefetch locality 1: prefetcht2 on x86). Into L2, not L1: the
 * rows in flight outgrow L1. Rows longer than PREFETCH_BYTES are left to the
 * hardware, which follows a row once it has begun (prefetching them too was
 * slower at radius 64). Figures: README, "Observations".
 */
typedef struct {
    int64_t channels;
    const void *const *sources;
    const int *kinds;
    const int64_t *itemsizes, *layer_strides;
    const float *pads;
    int64_t height, width;
    const int64_t *layer_index, *positions;
    int64_t first, last, radius;
    float *out;
    int64_t agent_stride;
    const int64_t *channel_offsets;
    int64_t n, chunk, *next; /* the agents, how many a thread takes at a time, the first not yet taken */
} gather_job;

#define LOOKAHEAD 128
#define PREFETCH_BYTES 512

/* The bytes of channel c's layer for agent i (the whole (H, W) grid it reads). */
static inline const char *agent_layer(const gather_job *job, int64_t i, int64_t c)
{
    return (const char *)job->sources[c]
           + (job->layer_strides[c] ? job->layer_index[i] * job->layer_strides[c] : 0) * job->itemsizes[c];
}

/*
 * Where agent i's window of channel c lies in its layer: window rows [r0, r1)
 * and columns [c0, c1) are inside the world, and `first` is the address of
 * cell (r0, c0) (NULL when no cell is inside).
 */
typedef struct {
    int64_t r0, r1, c0, c1;
    const char *first;
} window_part;

static inline window_part window_inside(const gather_job *job, int64_t i, int64_t c)
{
    const int64_t radius = job->radius, side = 2 * radius + 1;
    const int64_t y0 = job->positions[2 * i] - radius, x0 = job->positions[2 * i + 1] - radius;
    window_part part;
    part.r0 = y0 < 0 ? -y0 : 0;
    part.r1 = job->height - y0 < side ? job->height - y0 : side;
    part.c0 = x0 < 0 ? -x0 : 0;
    part.c1 = job->width - x0 < side ? job->width - x0 : side;
    part.first = part.r1 > part.r0 && part.c1 > part.c0
                     ? agent_layer(job, i, c) + ((y0 + part.r0) * job->width + x0 + part.c0) * job->itemsizes[c]
                     : NULL;
    return part;
}

/*
 * A cursor over the rows in the gather's order (agent, channel, row), kept
 * LOOKAHEAD rows ahead of the copy; it prefetches each row it passes. What it
 * needs per row is worked out once per window.
 */
typedef struct {
    int64_t i, c, r;
    window_part part;
    int64_t row_bytes, step;
} row_cursor;

static inline void cursor_window(const gather_job *job, row_cursor *at)
{
    at->r = 0;
    if (at->i >= job->last)
        return;
    at->part = window_inside(job, at->i, at->c);
    at->row_bytes = (at->part.c1 - at->part.c0) * job->itemsizes[at->c];
    at->step = job->width * job->itemsizes[at->c];
    if (at->row_bytes > PREFETCH_BYTES)
        at->part.first = NULL;
}

static inline void prefetch_next(const gather_job *job, row_cursor *at)
{
    if (at->i >= job->last)
        return;
    if (at->part.first != NULL && at->r >= at->part.r0 && at->r < at->part.r1) {
        const char *row = at->part.first + (at->r - at->part.r0) * at->step;
        for (int64_t offset = 0; offset < at->row_bytes; offset += 64)
            WS_PREFETCH(row + offset);
        WS_PREFETCH(row + at->row_bytes - 1);
    }
    if (++at->r == 2 * job->radius + 1) {
        if (++at->c == job->channels) {
            at->c = 0;
            at->i++;
        }
        cursor_window(job, at);
    }
}

/* Agents job->first .. job->last - 1. */
static void gather_range(const gather_job *job)
{
    const int64_t side = 2 * job->radius + 1;
    row_cursor ahead = {.i = job->first};
    cursor_window(job, &ahead);
    for (int k = 0; k < LOOKAHEAD; k++)
        prefetch_next(job, &ahead);
    for (int64_t i = job->first; i < job->last; i++) {
        for (int64_t c = 0; c < job->channels; c++) {
            const window_part part = window_inside(job, i, c);
            const int64_t itemsize = job->itemsizes[c], step = job->width * itemsize, count = part.c1 - part.c0;
            const float pad = job->pads[c];
            const int kind = job->kinds[c];
            float *window = job->out + i * job->agent_stride + job->channel_offsets[c];
            if (part.first == NULL) { /* the whole window is outside the world */
                for (int64_t r = 0; r < side; r++)
                    prefetch_next(job, &ahead);
                fill(window, side * side, pad);
                continue;
            }
            for (int64_t r = 0; r < part.r0; r++)
                prefetch_next(job, &ahead);
            fill(window, part.r0 * side, pad);
            const char *source = part.first;
            if (kind == K_F32 && count == side) { /* the common case: whole float32 rows */
                for (int64_t r = part.r0; r < part.r1; r++, source += step) {
                    prefetch_next(job, &ahead);
                    memcpy(window + r * side, source, (size_t)side * 4);
                }
            } else {
                for (int64_t r = part.r0; r < part.r1; r++, source += step) {
                    float *row = window + r * side;
                    prefetch_next(job, &ahead);
                    fill(row, part.c0, pad);
                    convert_row(row + part.c0, source, count, kind);
                    fill(row + part.c1, side - part.c1, pad);
                }
            }
            for (int64_t r = part.r1; r < side; r++)
                prefetch_next(job, &ahead);
            fill(window + part.r1 * side, (side - part.r1) * side, pad);
        }
    }
}

/* A thread of the gather: takes chunks of agents until none are left. */
static void gather_worker(void *argument)
{
    const gather_job *shared = argument;
    gather_job range = *shared;
    for (;;) {
        const int64_t first = WS_FETCH_ADD(shared->next, shared->chunk);
        if (first >= shared->n)
            break;
        range.first = first;
        range.last = first + shared->chunk < shared->n ? first + shared->chunk : shared->n;
        gather_range(&range);
    }
    return;
}

#if defined(_WIN32)
static DWORD WINAPI thread_main(LPVOID job)
{
    gather_worker(job);
    return 0;
}
static int thread_start(ws_thread *thread, void *job)
{
    *thread = CreateThread(NULL, 0, thread_main, job, 0, NULL);
    return *thread != NULL;
}
static void thread_join(ws_thread thread)
{
    WaitForSingleObject(thread, INFINITE);
    CloseHandle(thread);
}
#else
static void *thread_main(void *job)
{
    gather_worker(job);
    return NULL;
}
static int thread_start(ws_thread *thread, void *job)
{
    return pthread_create(thread, NULL, thread_main, job) == 0;
}
static void thread_join(ws_thread thread)
{
    pthread_join(thread, NULL);
}
#endif

#define WS_MAX_THREADS 64

WS_EXPORT int ws_gather_f32(int64_t channels, const void *const *sources, const int *kinds, const int64_t *itemsizes,
                  const int64_t *layer_strides, const float *pads, int64_t height, int64_t width,
                  const int64_t *layer_index, const int64_t *positions, int64_t n, int64_t radius, float *out,
                  int64_t agent_stride, const int64_t *channel_offsets, int threads, int64_t chunk_rows)
{
    ws_thread ids[WS_MAX_THREADS];
    int started[WS_MAX_THREADS] = {0};
    int64_t next = 0;
    if (threads < 1)
        threads = 1;
    if (threads > WS_MAX_THREADS)
        threads = WS_MAX_THREADS;
    if (threads > n)
        threads = n > 0 ? (int)n : 1;
    const int64_t rows = channels * (2 * radius + 1);
    const int64_t chunk = threads == 1 ? (n > 0 ? n : 1) : (chunk_rows / rows > 1 ? chunk_rows / rows : 1);
    gather_job job = {channels, sources, kinds, itemsizes, layer_strides, pads, height, width, layer_index,
                      positions, 0, 0, radius, out, agent_stride, channel_offsets, n, chunk, &next};
    for (int t = 1; t < threads; t++)
        started[t] = thread_start(&ids[t], &job);
    gather_worker(&job); /* this thread too; it takes what threads that did not start would have */
    for (int t = 1; t < threads; t++)
        if (started[t])
            thread_join(ids[t]);
    return threads;
}

/* Where a and b differ, for a commit's journal: the 4 KiB pages whose first WS_DENSE_LINES `line`-byte lines
 * (or every line, where a page has fewer) all differ go to `whole` (their count to *nwhole), and the lines
 * that differ in the other pages to `out` (returns how many; the last line may be short). Whole pages are
 * compared first (memcmp runs at memory speed), and only the pages that differ line by line. A dense change
 * is then a list of pages, not of 64 lines each, found without reading the rest of each page: a page taken
 * whole may hold lines that did not change, which the journal then holds too (harmless: replaying them
 * writes what the file holds), where reading all 64 lines of every page of a rewritten 256 MiB layer cost
 * 11 ms. `line` divides 4096. */
#define WS_DENSE_LINES 8
WS_EXPORT int64_t ws_changed_lines(const uint8_t *a, const uint8_t *b, int64_t nbytes, int64_t line, int64_t *out,
                                   int64_t *whole, int64_t *nwhole)
{
    const int64_t page = 4096;
    int64_t count = 0;
    *nwhole = 0;
    for (int64_t start = 0; start < nbytes; start += page) {
        int64_t length = nbytes - start < page ? nbytes - start : page;
        if (memcmp(a + start, b + start, (size_t)length) == 0)
            continue;
        if (length == page) {
            int64_t probe = page / line < WS_DENSE_LINES ? page / line : WS_DENSE_LINES, k = 0;
            while (k < probe && memcmp(a + start + k * line, b + start + k * line, (size_t)line) != 0)
                k++;
            if (k == probe) {
                whole[(*nwhole)++] = start / page;
                continue;
            }
        }
        for (int64_t at = start; at < start + length; at += line) {
            int64_t piece = start + length - at < line ? start + length - at : line;
            if (memcmp(a + at, b + at, (size_t)piece) != 0)
                out[count++] = at / line;
        }
    }
    return count;
}

/* For a commit's journal: of each 64-byte line k of `lines` (n of them, packed), the 8-byte words that differ
 * from line units[k] of `old` (the file's bytes of the region, which the commit has not written yet): a mask
 * byte per line to `masks` (bit w set: word w differs) and the differing words, line by line, to `words`
 * (room for n * 64 bytes). Returns how many words. Words are compared as bytes (memcpy into integers), so
 * neither buffer needs any alignment. */
WS_EXPORT int64_t ws_line_words(const uint8_t *lines, const uint8_t *old, const int64_t *units, int64_t n,
                                uint8_t *masks, uint8_t *words)
{
    int64_t count = 0;
    for (int64_t k = 0; k < n; k++) {
        const uint8_t *a = lines + k * 64, *b = old + units[k] * 64;
        uint8_t mask = 0;
        for (int w = 0; w < 8; w++) {
            uint64_t x, y;
            memcpy(&x, a + w * 8, 8);
            memcpy(&y, b + w * 8, 8);
            if (x != y) {
                mask |= (uint8_t)(1u << w);
                memcpy(words + count * 8, &x, 8);
                count++;
            }
        }
        masks[k] = mask;
    }
    return count;
}

/* Copy units (lines or pages of `unit` bytes) between a region and a packed buffer: gather (to_packed != 0)
 * packed[k] <- region[units[k]], else scatter region[units[k]] <- packed[k]. `units` is sorted; runs of
 * consecutive units are copied with one memcpy, so a dense change copies at memory speed. */
WS_EXPORT void ws_copy_units(uint8_t *region, uint8_t *packed, const int64_t *units, int64_t n, int64_t unit,
                             int to_packed)
{
    int64_t k = 0;
    while (k < n) {
        int64_t run = 1;
        while (k + run < n && units[k + run] == units[k] + run)
            run++;
        uint8_t *at = region + units[k] * unit, *in = packed + k * unit;
        if (to_packed)
            memcpy(in, at, (size_t)(run * unit));
        else
            memcpy(at, in, (size_t)(run * unit));
        k += run;
    }
}
