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
 *
 * Linear at decode batch sizes (llmplan_linear): y = x W^T (+ b) for a few rows of x, over W
 * packed once into panels of LIN_NB output columns, each panel [K][LIN_NB] contiguous, so the
 * kernel reads the weight as one sequential stream. Panels are shared out by OpenMP; a panel's
 * rows go through in register blocks of at most LIN_MR rows and its K in chunks of LIN_KC (the
 * chunk stays in L1 for the next block of rows). While a panel is computed on, the next one is
 * prefetched into L2, spread over the panel's passes, so reading the weight from memory overlaps
 * the arithmetic instead of alternating with it (which is where a general GEMM loses at 8-96 rows).
 * With 1-4 rows the product is mostly a weight stream: several panels are walked side by side, one
 * memory stream each (lin_few_*).
 */
#define _GNU_SOURCE
#ifdef __linux__
#include <sched.h>
#endif
#include <math.h>
#include <stdint.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
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

#define LIN_NB 32 /* output columns per packed panel (two 16-float vectors) */
#define LIN_MR 12 /* most rows per register block: 2 * 12 accumulators + 2 weight vectors */
#define LIN_KC 256 /* K per chunk: a 32 KB slice of the panel, kept in L1 across row blocks */

#ifdef __AVX512F__
/* The two halves' lane masks for a panel whose first ncols (1..LIN_NB) columns are real. */
static inline __mmask16 lin_mask(int64_t ncols, int half) {
    const int64_t n = ncols - 16 * half;
    return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
}

/* y[0:ncols] = acc (+ b[0:ncols]). */
static inline void lin_store(float *y, __m512 a0, __m512 a1, const float *b, __mmask16 m0, __mmask16 m1) {
    if (b) {
        a0 = _mm512_add_ps(a0, _mm512_maskz_loadu_ps(m0, b));
        a1 = _mm512_add_ps(a1, _mm512_maskz_loadu_ps(m1, b + 16));
    }
    _mm512_mask_storeu_ps(y, m0, a0);
    _mm512_mask_storeu_ps(y + 16, m1, a1);
}

/* One register block: y[i][0:ncols] (+)= x[i][0:K] . panel[0:K][0:ncols] for i < MR; b (when not
 * NULL) added at the store; accum: add to what y holds. Prefetches pfb bytes from pf into L2 over
 * the K steps (pf NULL: none). */
#define LIN_BLOCK(MR)                                                                              \
    static void lin_block_##MR(const float *x, int64_t ldx, const float *w, const float *b,        \
                               float *y, int64_t ldy, int64_t K, int64_t ncols, int accum,          \
                               const char *pf, int64_t pfb) {                                      \
        const __mmask16 m0 = lin_mask(ncols, 0), m1 = lin_mask(ncols, 1);                          \
        __m512 a0[MR], a1[MR];                                                                     \
        const int pf2 = pfb > 64 * K; /* over a line per step (one row block): two lines */          \
        for (int i = 0; i < MR; i++) {                                                             \
            a0[i] = accum ? _mm512_maskz_loadu_ps(m0, y + i * ldy) : _mm512_setzero_ps();           \
            a1[i] = accum ? _mm512_maskz_loadu_ps(m1, y + i * ldy + 16) : _mm512_setzero_ps();      \
        }                                                                                          \
        for (int64_t k = 0; k < K; k++) {                                                          \
            if (pf) {                                                                              \
                const int64_t o = (k * pfb / K) & ~(int64_t)63;                                    \
                __builtin_prefetch(pf + o, 0, 2);                                                  \
                if (pf2) __builtin_prefetch(pf + o + 64, 0, 2);                                    \
            }                                                                                      \
            const __m512 w0 = _mm512_loadu_ps(w + k * LIN_NB), w1 = _mm512_loadu_ps(w + k * LIN_NB + 16); \
            for (int i = 0; i < MR; i++) {                                                         \
                const __m512 xb = _mm512_set1_ps(x[i * ldx + k]);                                  \
                a0[i] = _mm512_fmadd_ps(xb, w0, a0[i]);                                            \
                a1[i] = _mm512_fmadd_ps(xb, w1, a1[i]);                                            \
            }                                                                                      \
        }                                                                                          \
        for (int i = 0; i < MR; i++) lin_store(y + i * ldy, a0[i], a1[i], b, m0, m1);               \
    }
#else /* portable: the compiler vectorises the column loop */
#define LIN_BLOCK(MR)                                                                              \
    static void lin_block_##MR(const float *x, int64_t ldx, const float *w, const float *b,        \
                               float *y, int64_t ldy, int64_t K, int64_t ncols, int accum,          \
                               const char *pf, int64_t pfb) {                                      \
        float acc[MR][LIN_NB];                                                                     \
        for (int i = 0; i < MR; i++)                                                               \
            for (int j = 0; j < LIN_NB; j++) acc[i][j] = accum && j < ncols ? y[i * ldy + j] : 0.f; \
        for (int64_t k = 0; k < K; k++) {                                                          \
            if (pf) __builtin_prefetch(pf + ((k * pfb / K) & ~(int64_t)63), 0, 2);                  \
            for (int i = 0; i < MR; i++) {                                                         \
                const float xv = x[i * ldx + k];                                                   \
                for (int j = 0; j < LIN_NB; j++) acc[i][j] += xv * w[k * LIN_NB + j];              \
            }                                                                                      \
        }                                                                                          \
        for (int i = 0; i < MR; i++)                                                               \
            for (int j = 0; j < ncols; j++) y[i * ldy + j] = acc[i][j] + (b ? b[j] : 0.f);          \
    }
#endif
LIN_BLOCK(1) LIN_BLOCK(2) LIN_BLOCK(3) LIN_BLOCK(4) LIN_BLOCK(5) LIN_BLOCK(6)
LIN_BLOCK(7) LIN_BLOCK(8) LIN_BLOCK(9) LIN_BLOCK(10) LIN_BLOCK(11) LIN_BLOCK(12)

typedef void (*lin_block_t)(const float *, int64_t, const float *, const float *, float *, int64_t,
                            int64_t, int64_t, int, const char *, int64_t);
static const lin_block_t LIN_BLOCKS[LIN_MR + 1] = {
    NULL, lin_block_1, lin_block_2, lin_block_3, lin_block_4, lin_block_5, lin_block_6,
    lin_block_7, lin_block_8, lin_block_9, lin_block_10, lin_block_11, lin_block_12};

/* Few rows (M <= LIN_FEW_ROWS): the product is mostly a weight stream, and one sequential stream
 * per core reads memory slower than several. So LIN_FEW_GROUP[M] panels are walked side by side
 * (one stream each; as many as 24 accumulators allow), whole K, and the next group of panels is
 * prefetched into L2 meanwhile. */
#define LIN_FEW_ROWS 4 /* two panels side by side at 5-6 rows were slower than the blocks */
static const int64_t LIN_FEW_GROUP[LIN_FEW_ROWS + 1] = {0, 4, 4, 4, 3};
#ifdef __AVX512F__
/* MR rows, up to NP panels: constants once inlined into lin_few_MR, so the accumulators stay in
 * registers. */
static inline __attribute__((always_inline)) void lin_few_impl(
    const float *x, int64_t ldx, const float *wp, const float *b, float *y, int64_t ldy, int64_t N, int64_t K,
    int64_t p0, int64_t np, const char *pf, int64_t pfb, const int MR, const int NP) {
    __m512 a[LIN_FEW_ROWS][4][2]; /* [MR][NP] used */
    for (int i = 0; i < MR; i++)
        for (int q = 0; q < NP; q++) a[i][q][0] = a[i][q][1] = _mm512_setzero_ps();
    const float *w = wp + p0 * K * LIN_NB;
    for (int64_t k = 0; k < K; k++) {
        if (pf) { /* two lines of the next group per step */
            const int64_t o = (k * pfb / K) & ~(int64_t)63;
            __builtin_prefetch(pf + o, 0, 2);
            __builtin_prefetch(pf + o + 64, 0, 2);
        }
        for (int q = 0; q < NP && q < np; q++) {
            const float *wq = w + q * K * LIN_NB + k * LIN_NB;
            const __m512 w0 = _mm512_loadu_ps(wq), w1 = _mm512_loadu_ps(wq + 16);
            for (int i = 0; i < MR; i++) {
                const __m512 xb = _mm512_set1_ps(x[i * ldx + k]);
                a[i][q][0] = _mm512_fmadd_ps(xb, w0, a[i][q][0]);
                a[i][q][1] = _mm512_fmadd_ps(xb, w1, a[i][q][1]);
            }
        }
    }
    for (int q = 0; q < NP && q < np; q++) {
        const int64_t p = p0 + q, ncols = N - p * LIN_NB < LIN_NB ? N - p * LIN_NB : LIN_NB;
        const __mmask16 m0 = lin_mask(ncols, 0), m1 = lin_mask(ncols, 1);
        for (int i = 0; i < MR; i++)
            lin_store(y + i * ldy + p * LIN_NB, a[i][q][0], a[i][q][1], b ? b + p * LIN_NB : NULL, m0, m1);
    }
}
#define LIN_FEW(MR, NP)                                                                            \
    static void lin_few_##MR(const float *x, int64_t ldx, const float *wp, const float *b, float *y,  \
                             int64_t ldy, int64_t N, int64_t K, int64_t p0, int64_t np, const char *pf, \
                             int64_t pfb) {                                                        \
        lin_few_impl(x, ldx, wp, b, y, ldy, N, K, p0, np, pf, pfb, MR, NP);                        \
    }
#else /* portable: panel by panel through the register blocks */
#define LIN_FEW(MR, NP)                                                                            \
    static void lin_few_##MR(const float *x, int64_t ldx, const float *wp, const float *b, float *y,  \
                             int64_t ldy, int64_t N, int64_t K, int64_t p0, int64_t np, const char *pf, \
                             int64_t pfb) {                                                        \
        for (int64_t p = p0; p < p0 + np; p++) {                                                   \
            const int64_t ncols = N - p * LIN_NB < LIN_NB ? N - p * LIN_NB : LIN_NB;               \
            LIN_BLOCKS[MR](x, ldx, wp + p * K * LIN_NB, b ? b + p * LIN_NB : NULL, y + p * LIN_NB, ldy, K, \
                           ncols, 0, p == p0 ? pf : NULL, pfb);                                     \
        }                                                                                          \
    }
#endif
LIN_FEW(1, 4) LIN_FEW(2, 4) LIN_FEW(3, 4) LIN_FEW(4, 3)
typedef void (*lin_few_t)(const float *, int64_t, const float *, const float *, float *, int64_t, int64_t,
                          int64_t, int64_t, int64_t, const char *, int64_t);
static const lin_few_t LIN_FEWS[LIN_FEW_ROWS + 1] = {NULL, lin_few_1, lin_few_2, lin_few_3, lin_few_4};

/* y[m][n] = sum_k x[m][k] * W[n][k] (+ b[n]) for m < M, n < N. x rows ldx floats apart, y rows ldy
 * apart; wp is W packed as [ceil(N / LIN_NB)][K][LIN_NB], columns past N zero; b NULL or [N].
 * Each output is summed in order of k. M, N and K are at least 1; shapes are the caller's to check.
 * Returns 0. */
int llmplan_linear(const float *x, int64_t ldx, const float *wp, const float *b, float *y,
                   int64_t ldy, int64_t M, int64_t N, int64_t K, int64_t threads) {
    const int64_t panels = (N + LIN_NB - 1) / LIN_NB, row_blocks = (M + LIN_MR - 1) / LIN_MR;
    const int64_t chunks = (K + LIN_KC - 1) / LIN_KC, passes = chunks * row_blocks;
    const int64_t panel_bytes = K * LIN_NB * (int64_t)sizeof(float), pf_bytes = panel_bytes / passes;
    if (M <= LIN_FEW_ROWS) {
        const int64_t G = LIN_FEW_GROUP[M], groups = (panels + G - 1) / G;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
        for (int64_t g = 0; g < groups; g++) {
            const int64_t p0 = g * G, np = panels - p0 < G ? panels - p0 : G;
            const int64_t next = panels - p0 - np < G ? panels - p0 - np : G;
            LIN_FEWS[M](x, ldx, wp, b, y, ldy, N, K, p0, np,
                        next ? (const char *)(wp + (p0 + np) * K * LIN_NB) : NULL, next * panel_bytes);
        }
        return 0;
    }
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t p = 0; p < panels; p++) {
        const float *w = wp + p * K * LIN_NB;
        const char *next = p + 1 < panels ? (const char *)(w + K * LIN_NB) : NULL;
        const int64_t ncols = N - p * LIN_NB < LIN_NB ? N - p * LIN_NB : LIN_NB;
        int64_t pass = 0;
        for (int64_t k0 = 0; k0 < K; k0 += LIN_KC) {
            const int64_t kc = K - k0 < LIN_KC ? K - k0 : LIN_KC;
            const float *bias = b && k0 + kc >= K ? b + p * LIN_NB : NULL;
            for (int64_t bi = 0, m0 = 0; bi < row_blocks; bi++, pass++) {
                const int64_t mr = (M - m0) / (row_blocks - bi); /* near-equal blocks, each <= LIN_MR */
                LIN_BLOCKS[mr](x + m0 * ldx + k0, ldx, w + k0 * LIN_NB, bias, y + m0 * ldy + p * LIN_NB,
                               ldy, kc, ncols, k0 > 0, next ? next + pass * pf_bytes : NULL, pf_bytes);
                m0 += mr;
            }
        }
    }
    return 0;
}

/* The element-wise steps between a decoder layer's products, each one pass over its rows instead
 * of the several torch ops (and dispatches) it takes otherwise. Rows are shared out by OpenMP only
 * when there are enough elements to pay for waking the team. */
#define GLUE_PAR(rows, n, threads) ((threads) > 1 && (rows) > 1 && (rows) * (n) >= 32768)

/* out[r] = s[r] / sqrt(mean(s[r]^2) + eps) * w, s = x (+ res), for rows of n floats (all
 * contiguous). With res, s is also written to sum (the residual stream after the add). */
void llmplan_rms_norm(const float *x, const float *res, float *sum, const float *w, float *out,
                      int64_t rows, int64_t n, float eps, int64_t threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (GLUE_PAR(rows, n, threads))
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        const float *src = xr;
        float ss = 0.f;
        if (res) {
            const float *rr = res + r * n;
            float *sr = sum + r * n;
#pragma omp simd reduction(+ : ss)
            for (int64_t i = 0; i < n; i++) {
                const float v = xr[i] + rr[i];
                sr[i] = v;
                ss += v * v;
            }
            src = sr;
        } else {
#pragma omp simd reduction(+ : ss)
            for (int64_t i = 0; i < n; i++) ss += xr[i] * xr[i];
        }
        const float inv = 1.f / sqrtf(ss / (float)n + eps);
        float *o = out + r * n;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = src[i] * inv * w[i];
    }
}

/* out[r][i] = silu(gu[r][i]) * gu[r][n + i]: the gate and up halves of a fused gate/up product
 * ([rows, 2n] contiguous) into [rows, n]. */
void llmplan_silu_mul(const float *gu, float *out, int64_t rows, int64_t n, int64_t threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (GLUE_PAR(rows, n, threads))
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gu + r * 2 * n, *u = g + n;
        float *o = out + r * n;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) o[i] = g[i] / (1.f + expf(-g[i])) * u[i];
    }
}

/* RoPE (rotate-half) of one step's queries and keys, and the new keys and values written to their
 * cache slots. qkv [T][ld] holds per token heads query heads, then kv_heads key heads, then kv_heads
 * value heads, head_dim each; cos, sin [T][head_dim / 2]. q_out [T][heads][head_dim] gets the
 * rotated queries, k_out [T][kv_heads][head_dim] the rotated keys; with slots
 * (each < the pools' slot count, checked by the caller), token t's rotated keys and its values go
 * to row slots[t] of kc and vc ([slots][kv_heads][head_dim] contiguous). Each output is
 * x1 * c - x2 * s (first half) or x2 * c + x1 * s (second half), each product rounded before the
 * sum, as the torch ops compute it: no contraction into fused multiply-adds here. */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
static inline void rope_head(const float *x, const float *c, const float *s, float *o, int64_t half) {
#pragma omp simd
    for (int64_t i = 0; i < half; i++) {
        const float a = x[i] * c[i], b = x[half + i] * s[i];
        o[i] = a - b;
    }
#pragma omp simd
    for (int64_t i = 0; i < half; i++) {
        const float a = x[half + i] * c[i], b = x[i] * s[i];
        o[half + i] = a + b;
    }
}

void llmplan_rope_kv(const float *qkv, int64_t ld, const float *cos, const float *sin, float *q_out,
                     float *k_out, const int64_t *slots, float *kc, float *vc, int64_t T, int64_t heads,
                     int64_t kv_heads, int64_t head_dim, int64_t threads) {
    const int64_t half = head_dim / 2, tok = (heads + 2 * kv_heads) * head_dim;
#pragma omp parallel for schedule(static) num_threads(threads) if (GLUE_PAR(T, tok, threads))
    for (int64_t t = 0; t < T; t++) {
        const float *x = qkv + t * ld, *c = cos + t * half, *s = sin + t * half;
        for (int64_t h = 0; h < heads; h++) rope_head(x + h * head_dim, c, s, q_out + (t * heads + h) * head_dim, half);
        float *kd = slots ? kc + slots[t] * kv_heads * head_dim : NULL;
        for (int64_t h = 0; h < kv_heads; h++) {
            float *ko = k_out + (t * kv_heads + h) * head_dim;
            rope_head(x + (heads + h) * head_dim, c, s, ko, half);
            if (kd) memcpy(kd + h * head_dim, ko, sizeof(float) * head_dim);
        }
        if (slots)
            memcpy(vc + slots[t] * kv_heads * head_dim, x + (heads + kv_heads) * head_dim,
                   sizeof(float) * kv_heads * head_dim);
    }
}
#pragma GCC pop_options

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
