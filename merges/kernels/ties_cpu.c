/* The loops of the fused CPU kernel for TIES; ties_cpu.py compiles this file once per machine
   and calls it (see its docstring for what each loop computes and why the result equals torch's).

   Compiled with -ffp-contract=off and without -ffast-math: every float operation is one IEEE
   single-precision operation in the order written, as in torch. The inputs are read one block of
   BLOCK entries at a time into float32 scratch arrays that stay in the L1 cache, and each loop
   over a block is written so that the compiler vectorizes it. Inputs are bfloat16 (`bf16`
   non-zero: uint16 bit patterns) or float32. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 1024 /* entries per block: the scratch arrays stay in the L1 cache */
#define CHUNK 16   /* entries per chunk when collecting: a chunk without a hit costs one vector compare */
#define MAX_PIVOTS 10 /* pivots per model that count_at_least compares in registers at once */
#define MAX_MODELS 16 /* models per merge: merge_pass keeps per-model values for an entry on the stack */

const int max_models = MAX_MODELS; /* read by ties_cpu.supports */

/* input[first:first + size] as float32 (bfloat16 is the upper half of a float32's bits) */
static void load_block(float *restrict block, const void *restrict input, int bf16, int64_t first, int size) {
    if (bf16) {
        const uint16_t *from = (const uint16_t *)input + first;
        uint32_t *bits = (uint32_t *)block;
        for (int j = 0; j < size; j++)
            bits[j] = (uint32_t)from[j] << 16;
    } else {
        memcpy(block, (const float *)input + first, (size_t)size * sizeof(float));
    }
}

static float load_one(const void *input, int bf16, int64_t index) {
    float value;
    load_block(&value, input, bf16, index, 1);
    return value;
}

/* block[:size] into out[first:], bfloat16 rounded to nearest even as torch rounds it, NaN kept a NaN */
static void store_block(void *restrict out, int bf16, int64_t first, const float *restrict block, int size) {
    if (!bf16) {
        memcpy((float *)out + first, block, (size_t)size * sizeof(float));
        return;
    }
    const uint32_t *bits = (const uint32_t *)block;
    uint16_t *to = (uint16_t *)out + first;
    for (int j = 0; j < size; j++) {
        uint32_t b = bits[j];
        uint16_t rounded = (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
        to[j] = (b & 0x7FFFFFFFu) > 0x7F800000u ? (uint16_t)0x7FC0 : rounded;
    }
}

/* magnitudes[:size] = |model - base| over one block, base_block already loaded */
static void magnitudes_block(float *restrict magnitudes, const float *restrict base_block, const void *model,
                             int model_bf16, int64_t first, int size) {
    load_block(magnitudes, model, model_bf16, first, size);
    for (int j = 0; j < size; j++)
        magnitudes[j] = fabsf(magnitudes[j] - base_block[j]);
}

static int block_size(int64_t start, int64_t end) {
    return end - start < BLOCK ? (int)(end - start) : BLOCK;
}

/* out[s] = |model[picks[s]] - base[picks[s]]| */
void sample_magnitudes(const void *base, int base_bf16, const void *model, int model_bf16, const int64_t *picks,
                       int64_t count, float *out) {
    for (int64_t s = 0; s < count; s++)
        out[s] = fabsf(load_one(model, model_bf16, picks[s]) - load_one(base, base_bf16, picks[s]));
}

/* counts[p] += how many of the block's magnitudes |model - base| are >= pivots[p], the
   magnitude of an entry compared with every pivot while in a register. Inlined with a constant
   `width` so that the loop over the pivots unrolls and the loop over the entries vectorizes. */
static inline __attribute__((always_inline)) void count_block(int width, const float *restrict model_block,
                                                              const float *restrict base_block, int size,
                                                              const float *pivots, int64_t *counts) {
    int32_t c[MAX_PIVOTS] = {0}; /* local, so that the counts live in registers */
    for (int j = 0; j < size; j++) {
        float magnitude = fabsf(model_block[j] - base_block[j]);
        for (int p = 0; p < width; p++)
            c[p] += magnitude >= pivots[p];
    }
    for (int p = 0; p < width; p++)
        counts[p] += c[p];
}

/* counts[row * width + p]: how many magnitudes of models[chosen[row]] are >= pivots[row * width + p] */
void count_at_least(const void *base, int base_bf16, const void *const *models, int model_bf16, int64_t n,
                    const int64_t *chosen, int64_t rows, const float *pivots, int64_t width, int64_t *counts) {
    float base_block[BLOCK], model_block[BLOCK];
    memset(counts, 0, (size_t)(rows * width) * sizeof(int64_t));
    for (int64_t start = 0; start < n; start += BLOCK) {
        int size = block_size(start, n);
        load_block(base_block, base, base_bf16, start, size);
        for (int64_t row = 0; row < rows; row++) {
            const float *row_pivots = pivots + row * width;
            int64_t *row_counts = counts + row * width;
            load_block(model_block, models[chosen[row]], model_bf16, start, size);
            switch (width) { /* each usual width compiled with its loop over the pivots unrolled */
#define COUNT_BLOCK(WIDTH) case WIDTH: count_block(WIDTH, model_block, base_block, size, row_pivots, row_counts); break;
                COUNT_BLOCK(1) COUNT_BLOCK(2) COUNT_BLOCK(3) COUNT_BLOCK(4) COUNT_BLOCK(5)
                COUNT_BLOCK(6) COUNT_BLOCK(7) COUNT_BLOCK(8) COUNT_BLOCK(9) COUNT_BLOCK(10)
#undef COUNT_BLOCK
            default:
                for (int64_t p = 0; p < width; p += MAX_PIVOTS) /* more pivots: in groups */
                    count_block((int)(width - p < MAX_PIVOTS ? width - p : MAX_PIVOTS), model_block, base_block, size,
                                row_pivots + p, row_counts + p);
            }
        }
    }
}

/* The magnitudes in [low, high) into found, in index order: at most `expected` of them (fewer
   only with NaN inputs). Returns how many. */
int64_t collect(const void *base, int base_bf16, const void *model, int model_bf16, int64_t n, float low,
                float high, int64_t expected, float *found) {
    float base_block[BLOCK], magnitudes[BLOCK];
    int64_t at = 0;
    for (int64_t start = 0; start < n; start += BLOCK) {
        int size = block_size(start, n);
        load_block(base_block, base, base_bf16, start, size);
        magnitudes_block(magnitudes, base_block, model, model_bf16, start, size);
        for (int chunk = 0; chunk < size; chunk += CHUNK) {
            int end = chunk + CHUNK < size ? chunk + CHUNK : size, hits = 0;
            for (int j = chunk; j < end; j++)
                hits += (magnitudes[j] >= low) & (magnitudes[j] < high);
            if (hits && at + hits <= expected)
                for (int j = chunk; j < end; j++)
                    if (magnitudes[j] >= low && magnitudes[j] < high)
                        found[at++] = magnitudes[j];
        }
    }
    return at;
}

/* The block index before which entries tied with the threshold are kept, for a block of
   `size` entries in which the model has *ties_left more ties to keep (the first ones in index
   order) and may run out; *ties_left is reduced by the ties kept. */
static int tied_kept_before(const float *model_block, const float *base_block, int size, float threshold,
                            int64_t *ties_left) {
    int64_t seen = 0;
    for (int j = 0; j < size; j++) {
        if (fabsf(model_block[j] - base_block[j]) == threshold) {
            if (seen == *ties_left) {
                *ties_left = 0;
                return j;
            }
            seen++;
        }
    }
    *ties_left -= seen;
    return size;
}

/* Per-model counts over a block, which merge_pass adds up. */
typedef struct {
    int32_t tied[MAX_MODELS], kept[MAX_MODELS], agreeing[MAX_MODELS], nonfinite;
} Counts;

/* Entries from..to of a block, every step for an entry in registers: the task vector, trimmed
   (kept where its magnitude >= keep_from[i]: the threshold, or the next float above it where
   ties are not kept), weighted, the elected sign, the disjoint mean, lambda, + base, the float32
   operations of ties.ties in its order. Inlined with constant `count` and `by_sum`, so that the
   loops over the models unroll and the loop over the entries vectorizes. Any NaN or infinity
   in an input makes the merged entry NaN or infinite (it reaches the sum through the product
   with the mask), so one check of the output finds every bad input, and every merged value that
   the output dtype cannot hold (|result| >= `limit`). `divide` is 0 where every denominator is a
   power of two (see merge_pass). */
static inline __attribute__((always_inline)) void merge_range(
        int count, int by_sum, int divide, const float *restrict rows, const float *restrict base_block, int from, int to,
        const float *thresholds, const float *keep_from, const float *weights, float lambda, float limit,
        int normalize, float *restrict merged, Counts *restrict counts) {
    Counts c = {0}; /* local, so that its fields live in registers */
    for (int j = from; j < to; j++) {
        float b = base_block[j], weighted[MAX_MODELS], score = 0.0f;
        for (int i = 0; i < count; i++) {
            float delta = rows[i * BLOCK + j] - b, magnitude = fabsf(delta);
            float trimmed = delta * (magnitude >= keep_from[i] ? 1.0f : 0.0f);
            c.tied[i] += magnitude == thresholds[i];
            c.kept[i] += trimmed != 0.0f;
            weighted[i] = trimmed * weights[i];
            /* the elected sign: + where the score (0 + w_0 + w_1 + ...) is >= 0 */
            score += by_sum ? weighted[i] : (float)(weighted[i] > 0.0f) - (float)(weighted[i] < 0.0f);
        }
        float sign = score >= 0.0f ? 1.0f : -1.0f;
        float total = 0.0f, divisor = 0.0f; /* 0 + ...: the first addition turns -0.0 into +0.0, as in ties */
        for (int i = 0; i < count; i++) { /* the disjoint mean over entries that agree with the sign */
            int agrees = weighted[i] * sign > 0.0f;
            float masked = weighted[i] * (agrees ? 1.0f : 0.0f);
            c.agreeing[i] += agrees;
            total += masked;
            divisor += weights[i] * (masked != 0.0f ? 1.0f : 0.0f);
        }
        /* the quotient, and lambda: dividing or multiplying by 1 is exact, so neither needs a branch */
        float quotient, denominator = normalize && divisor != 0.0f ? divisor : 1.0f;
        if (divide) {
            quotient = total / denominator;
        } else { /* a power of two: times its reciprocal (exponent negated) is the same float, faster */
            uint32_t bits;
            memcpy(&bits, &denominator, sizeof bits);
            bits = 0x7F000000u - bits;
            float reciprocal;
            memcpy(&reciprocal, &bits, sizeof reciprocal);
            quotient = total * reciprocal;
        }
        float result = quotient * lambda + b;
        c.nonfinite += !(fabsf(result) < limit);
        merged[j] = result;
    }
    for (int i = 0; i < count; i++) {
        counts->tied[i] += c.tied[i];
        counts->kept[i] += c.kept[i];
        counts->agreeing[i] += c.agreeing[i];
    }
    counts->nonfinite += c.nonfinite;
}

/* merge_range compiled for each usual number of models, consensus and division, any other at run time */
static void merge_range_for(int count, int by_sum, int divide, const float *rows, const float *base_block, int from,
                            int to, const float *thresholds, const float *keep_from, const float *weights,
                            float lambda, float limit, int normalize, float *merged, Counts *counts) {
#define MERGE_RANGE(COUNT, BY_SUM, DIVIDE)                                                                   \
    case COUNT * 4 + BY_SUM * 2 + DIVIDE:                                                                \
        merge_range(COUNT, BY_SUM, DIVIDE, rows, base_block, from, to, thresholds, keep_from, weights, lambda, \
                    limit, normalize, merged, counts);                                                   \
        return;
#define MERGE_RANGES(COUNT) MERGE_RANGE(COUNT, 0, 0) MERGE_RANGE(COUNT, 0, 1) MERGE_RANGE(COUNT, 1, 0) MERGE_RANGE(COUNT, 1, 1)
    switch (count * 4 + (by_sum != 0) * 2 + (divide != 0)) {
        MERGE_RANGES(1) MERGE_RANGES(2) MERGE_RANGES(3) MERGE_RANGES(4)
    }
    merge_range(count, by_sum, divide, rows, base_block, from, to, thresholds, keep_from, weights, lambda, limit,
                normalize, merged, counts);
#undef MERGE_RANGES
#undef MERGE_RANGE
}

/* Whether merge_range must divide: normalizing, with some denominator that is not a power of
   two. A denominator is a sum of weights (of the models that agree with the elected sign),
   added in model order as merge_range adds them; all 2^count sums are tried for up to 8 models. */
static int must_divide(const float *weights, int64_t count, int normalize) {
    if (!normalize)
        return 0;
    if (count > 8)
        return 1;
    for (int subset = 1; subset < (1 << count); subset++) {
        float sum = 0.0f;
        for (int i = 0; i < count; i++)
            sum += weights[i] * ((subset >> i) & 1 ? 1.0f : 0.0f);
        uint32_t bits;
        memcpy(&bits, &sum, sizeof bits);
        uint32_t exponent = (bits >> 23) & 0xFFu;
        /* a zero sum becomes 1; otherwise a positive normal power of two with a normal reciprocal */
        if (sum != 0.0f && ((bits & 0x807FFFFFu) != 0 || exponent < 1 || exponent > 253))
            return 1;
    }
    return 0;
}

/* Sets nonfinite[0] (base) or nonfinite[i + 1] (model i) for each input with a NaN or an
   infinity among entries from..to; returns whether there was one. */
static int blame(const void *base, int base_bf16, const void *const *models, int model_bf16, int64_t count,
                 int64_t from, int64_t to, uint8_t *nonfinite) {
    int found = 0;
    for (int64_t at = from; at < to; at++) {
        int bad = !(fabsf(load_one(base, base_bf16, at)) < INFINITY);
        nonfinite[0] |= bad;
        found |= bad;
        for (int i = 0; i < count; i++) {
            bad = !(fabsf(load_one(models[i], model_bf16, at)) < INFINITY);
            nonfinite[i + 1] |= bad;
            found |= bad;
        }
    }
    return found;
}

/* Entries begin..end of the merge into out[0:end - begin]. Adds to the per-model counts of
   trimmed (non-zero) and agreeing entries; sets nonfinite[0] (base) or nonfinite[i + 1] (model i)
   where an input holds a NaN or an infinity, or nonfinite[count + 1] where every input is finite
   but a merged value is not (or overflows the output dtype), and then stops. Returns 0, -1 when out of memory, or
   -2 for more than MAX_MODELS models. */
int merge_pass(const void *base, int base_bf16, const void *const *models, int model_bf16, int64_t count,
               int64_t begin, int64_t end, const float *thresholds, int64_t *ties_left, const float *weights,
               float lambda, int normalize, int by_sum, void *out, int out_bf16, int64_t *nonzero,
               int64_t *agreeing, uint8_t *nonfinite) {
    if (count < 1 || count > MAX_MODELS)
        return -2;
    float *rows = malloc((size_t)count * BLOCK * sizeof(float)); /* each model's block */
    if (!rows)
        return -1;
    float base_block[BLOCK], merged[BLOCK], keep_from[MAX_MODELS];
    int divide = must_divide(weights, count, normalize);
    /* the smallest magnitude the output cannot hold: bfloat16 rounds 0x7F7F8000 and above up to infinity */
    uint32_t overflow_bits = 0x7F7F8000u;
    float limit = INFINITY;
    if (out_bf16)
        memcpy(&limit, &overflow_bits, sizeof limit);
    for (int64_t start = begin; start < end; start += BLOCK) {
        int size = block_size(start, end), ties_end[MAX_MODELS], cuts[MAX_MODELS + 2], ncuts = 0;
        Counts counts = {0};
        load_block(base_block, base, base_bf16, start, size);
        cuts[ncuts++] = 0;
        for (int i = 0; i < count; i++) {
            load_block(rows + i * BLOCK, models[i], model_bf16, start, size);
            ties_end[i] = ties_left[i] >= size ? size /* every tie kept; counted off below */
                          : ties_left[i] == 0 ? 0
                          : tied_kept_before(rows + i * BLOCK, base_block, size, thresholds[i], &ties_left[i]);
            if (ties_end[i] > 0 && ties_end[i] < size)
                cuts[ncuts++] = ties_end[i];
        }
        cuts[ncuts++] = size;
        for (int a = 1; a < ncuts; a++) /* ascending: between two cuts every model keeps all ties or none */
            for (int b = a; b > 0 && cuts[b] < cuts[b - 1]; b--) {
                int swap = cuts[b];
                cuts[b] = cuts[b - 1];
                cuts[b - 1] = swap;
            }
        for (int k = 0; k + 1 < ncuts; k++) {
            if (cuts[k] == cuts[k + 1])
                continue;
            for (int i = 0; i < count; i++)
                keep_from[i] = cuts[k] < ties_end[i] ? thresholds[i] : nextafterf(thresholds[i], INFINITY);
            merge_range_for((int)count, by_sum, divide, rows, base_block, cuts[k], cuts[k + 1], thresholds, keep_from,
                            weights, lambda, limit, normalize, merged, &counts);
        }
        if (counts.nonfinite) {
            if (blame(base, base_bf16, models, model_bf16, count, start, start + size, nonfinite))
                blame(base, base_bf16, models, model_bf16, count, start + size, end, nonfinite); /* the rest, too */
            else /* finite inputs, merged beyond the output's range: the recipe's weights or lambda */
                nonfinite[count + 1] = 1;
            break;
        }
        for (int i = 0; i < count; i++) {
            ties_left[i] -= ties_left[i] >= size ? counts.tied[i] : 0;
            nonzero[i] += counts.kept[i];
            agreeing[i] += counts.agreeing[i];
        }
        store_block(out, out_bf16, start - begin, merged, size);
    }
    free(rows);
    return 0;
}
