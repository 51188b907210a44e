/* Compiled CPU operations of llmplan's engine: decode attention over the paged KV pool, and
 * pinning the engine's OpenMP threads to CPUs.
 *
 * Built and loaded by llmplan/runtime/engine/native.py. Loaded after PyTorch, the library's
 * libgomp.so.1 is the one PyTorch already loaded, so its parallel regions run on PyTorch's own
 * intra-op threads (a second OpenMP runtime would spin against them for the same cores).
 *
 * Decode attention (llmplan_decode_attention): one row is one sequence's decode token; it attends
 * to its own first lens[r] cached keys, found block by block through its block table. Each
 * token's keys for every KV head are one contiguous run of kv_heads * head_dim floats, so a row
 * streams its blocks in order, twice (keys, then values): scores for all heads of a token at
 * once, a softmax per head over the row's scores, then the values weighted into per-head
 * accumulators. Work items are (row, group of KV heads), shared out by OpenMP.
 */
#define _GNU_SOURCE
#ifdef __linux__
#include <sched.h>
#endif
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* glibc's vector expf (libmvec): lets the compiler vectorise the softmax without -ffast-math,
 * whose finite-math assumptions would change what a NaN or infinite score gives. */
__attribute__((simd("notinbranch"))) float expf(float);

typedef struct {
    const float *q, *k, *v;
    const int64_t *tables, *lens;
    float *out;
    int64_t max_blocks, heads, kv_heads, head_dim, block_size, kv_per_item, items_per_row;
    float scale;
} job_t;

static inline float dot(const float *a, const float *b, int64_t n) {
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* buf holds nh * L scores, then nh * head_dim scaled queries, then nh * head_dim accumulators. */
static void run_item(const job_t *J, int64_t item, float *buf) {
    const int64_t r = item / J->items_per_row, part = item % J->items_per_row;
    const int64_t hd = J->head_dim, kvh = J->kv_heads, G = J->heads / kvh, bs = J->block_size;
    const int64_t j0 = part * J->kv_per_item, j1 = j0 + J->kv_per_item < kvh ? j0 + J->kv_per_item : kvh;
    const int64_t nh = (j1 - j0) * G, L = J->lens[r], tok = kvh * hd;
    const int64_t *table = J->tables + r * J->max_blocks;
    float *s = buf, *qs = buf + nh * L, *acc = qs + nh * hd;
    const float *qr = J->q + (r * J->heads + j0 * G) * hd;
    for (int64_t i = 0; i < nh * hd; i++) qs[i] = qr[i] * J->scale;

    for (int64_t b = 0, t = 0; t < L; b++) { /* scores: s[h][t] = q_h . k_t */
        const float *kb = J->k + table[b] * bs * tok + j0 * hd;
        const int64_t n = L - t < bs ? L - t : bs;
        for (int64_t o = 0; o < n; o++, t++)
            for (int64_t h = 0; h < nh; h++) s[h * L + t] = dot(qs + h * hd, kb + o * tok + (h / G) * hd, hd);
    }
    for (int64_t h = 0; h < nh; h++) { /* softmax per head; a NaN score makes the head's row NaN */
        float *sh = s + h * L, m = sh[0], sum = 0.f;
        for (int64_t t = 1; t < L; t++) m = sh[t] > m ? sh[t] : m;
#pragma omp simd reduction(+ : sum)
        for (int64_t t = 0; t < L; t++) {
            const float e = expf(sh[t] - m);
            sh[t] = e;
            sum += e;
        }
        const float inv = 1.f / sum;
#pragma omp simd
        for (int64_t t = 0; t < L; t++) sh[t] *= inv;
    }
    memset(acc, 0, sizeof(float) * nh * hd);
    for (int64_t b = 0, t = 0; t < L; b++) { /* out_h = sum_t p[h][t] v_t */
        const float *vb = J->v + table[b] * bs * tok + j0 * hd;
        const int64_t n = L - t < bs ? L - t : bs;
        for (int64_t o = 0; o < n; o++, t++) {
            const float *vt = vb + o * tok;
            for (int64_t h = 0; h < nh; h++) {
                const float p = s[h * L + t], *vh = vt + (h / G) * hd;
                float *a = acc + h * hd;
#pragma omp simd
                for (int64_t i = 0; i < hd; i++) a[i] += p * vh[i];
            }
        }
    }
    memcpy(J->out + (r * J->heads + j0 * G) * hd, acc, sizeof(float) * nh * hd);
}

/* q [rows, heads, head_dim]; k, v [blocks, block_size, kv_heads, head_dim] (contiguous pools);
 * tables [rows, max_blocks] block ids (row r reads its first ceil(lens[r] / block_size));
 * lens [rows], each >= 1; out [rows, heads, head_dim]. heads is a multiple of kv_heads (query
 * head h reads KV head h / (heads / kv_heads)). An item is a row's KV heads
 * [p * kv_per_item, (p + 1) * kv_per_item). Returns 0, or 1 when a scratch buffer could not be
 * allocated (out is then incomplete). The caller checks shapes and block ids: none are checked here. */
int llmplan_decode_attention(const float *q, const float *k, const float *v, const int64_t *tables,
                             int64_t max_blocks, const int64_t *lens, float *out, int64_t rows,
                             int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t block_size,
                             float scale, int64_t kv_per_item, int64_t threads) {
    const int64_t per_row = (kv_heads + kv_per_item - 1) / kv_per_item, items = rows * per_row;
    const int64_t nh = kv_per_item * (heads / kv_heads);
    const job_t J = {q, k, v, tables, lens, out, max_blocks, heads, kv_heads, head_dim,
                     block_size, kv_per_item, per_row, scale};
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1) reduction(| : failed)
    {
        float *buf = NULL;
        size_t cap = 0;
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            const size_t need = (size_t)(nh * lens[it / per_row] + 2 * nh * head_dim);
            if (need > cap) {
                free(buf);
                buf = malloc(sizeof(float) * need);
                cap = buf ? need : 0;
            }
            if (!buf) {
                failed = 1;
                continue;
            }
            run_item(&J, it, buf);
        }
        free(buf);
    }
    return failed;
}

/* Pin the calling thread's OpenMP team of n threads, thread i to CPU cpus[i] (libgomp keeps the
 * team's threads for later regions of the same size, so PyTorch's ops then run on them). Returns
 * 0, 1 when a CPU could not be set, 2 when built without OpenMP and n > 1, 3 off Linux. */
#ifdef _OPENMP
#include <omp.h>
#endif
int llmplan_bind_threads(const int64_t *cpus, int64_t n) {
    int failed = 0;
#ifndef __linux__
    (void)cpus;
    (void)n;
    return 3;
#elif defined(_OPENMP)
#pragma omp parallel num_threads(n) reduction(| : failed)
    {
        const int i = omp_get_thread_num();
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((int)cpus[i], &set);
        if (omp_get_num_threads() != n || sched_setaffinity(0, sizeof set, &set)) failed = 1;
    }
#else
    if (n > 1) return 2;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)cpus[0], &set);
    failed = sched_setaffinity(0, sizeof set, &set) != 0;
#endif
    return failed;
}
