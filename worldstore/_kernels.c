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
#include <pthread.h>

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

int ws_merge_back(int64_t *a_cells, void *a_values, int64_t na, const int64_t *b_cells, const void *b_values,
                  int64_t nb, int64_t itemsize)
{
    switch (itemsize) {
    case 2: merge_back16(a_cells, a_values, na, b_cells, b_values, nb); return 0;
    case 4: merge_back32(a_cells, a_values, na, b_cells, b_values, nb); return 0;
    case 8: merge_back64(a_cells, a_values, na, b_cells, b_values, nb); return 0;
    default: return -1;
    }
}

int64_t ws_compact(int64_t *cells, void *values, int64_t n, int64_t itemsize)
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
void ws_locate_sorted(const int64_t *cells, int64_t n, const int64_t *queries, int64_t nq,
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
WS_CLONES int64_t NAME(REAL *values, int64_t n, REAL factor, REAL threshold)                              \
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
void ws_block_starts(const int64_t *cells, int64_t n, int64_t shift, int64_t *starts, int64_t blocks)
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
void ws_tags_mark(const int64_t *cells, int64_t n, uint8_t *slots, int64_t bits, uint8_t tag, uint8_t several)
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
 * (float32 sources: memcpy) or one converting loop. Agents are split over
 * `threads` threads; each writes its agents' part of out, in order.
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
} gather_job;

static void *gather_run(void *argument)
{
    const gather_job *job = argument;
    const int64_t side = 2 * job->radius + 1, radius = job->radius, height = job->height, width = job->width;
    for (int64_t i = job->first; i < job->last; i++) {
        const int64_t y = job->positions[2 * i], x = job->positions[2 * i + 1];
        const int64_t x0 = x - radius;
        const int64_t c0 = x0 < 0 ? -x0 : 0;
        const int64_t c1 = width - x0 < side ? width - x0 : side;
        for (int64_t c = 0; c < job->channels; c++) {
            const int64_t itemsize = job->itemsizes[c];
            const char *layer = (const char *)job->sources[c]
                                + (job->layer_strides[c] ? job->layer_index[i] * job->layer_strides[c] : 0) * itemsize;
            const float pad = job->pads[c];
            float *window = job->out + i * job->agent_stride + job->channel_offsets[c];
            for (int64_t r = 0; r < side; r++) {
                const int64_t gy = y - radius + r;
                float *row = window + r * side;
                if (gy < 0 || gy >= height || c1 <= c0) {
                    fill(row, side, pad);
                    continue;
                }
                fill(row, c0, pad);
                convert_row(row + c0, layer + (gy * width + x0 + c0) * itemsize, c1 - c0, job->kinds[c]);
                fill(row + c1, side - c1, pad);
            }
        }
    }
    return NULL;
}

#define WS_MAX_THREADS 64

int ws_gather_f32(int64_t channels, const void *const *sources, const int *kinds, const int64_t *itemsizes,
                  const int64_t *layer_strides, const float *pads, int64_t height, int64_t width,
                  const int64_t *layer_index, const int64_t *positions, int64_t n, int64_t radius, float *out,
                  int64_t agent_stride, const int64_t *channel_offsets, int threads)
{
    gather_job jobs[WS_MAX_THREADS];
    pthread_t ids[WS_MAX_THREADS];
    int started[WS_MAX_THREADS] = {0};
    if (threads < 1)
        threads = 1;
    if (threads > WS_MAX_THREADS)
        threads = WS_MAX_THREADS;
    if (threads > n)
        threads = n > 0 ? (int)n : 1;
    for (int t = 0; t < threads; t++) {
        gather_job job = {channels, sources, kinds, itemsizes, layer_strides, pads, height, width, layer_index,
                          positions, n * t / threads, n * (t + 1) / threads, radius, out, agent_stride,
                          channel_offsets};
        jobs[t] = job;
    }
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&ids[t], NULL, gather_run, &jobs[t]) == 0;
    gather_run(&jobs[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else
            gather_run(&jobs[t]); /* no thread: do its share here */
    }
    return threads;
}

/* The pages (of `page` bytes; the last may be short) where a and b differ: their indices into `out`,
 * returns how many. A commit's search for what changed: memcmp runs at memory speed. */
int64_t ws_changed_pages(const uint8_t *a, const uint8_t *b, int64_t nbytes, int64_t page, int64_t *out)
{
    int64_t count = 0;
    for (int64_t start = 0, index = 0; start < nbytes; start += page, index++) {
        int64_t length = nbytes - start < page ? nbytes - start : page;
        if (memcmp(a + start, b + start, (size_t)length) != 0)
            out[count++] = index;
    }
    return count;
}
