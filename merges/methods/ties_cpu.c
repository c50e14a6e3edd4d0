/* The loops of the fused CPU kernel for TIES; ties_cpu.py compiles this file once per machine
   and calls it (see its docstring for what each loop computes and why the result equals torch's).

   Compiled with -ffp-contract=off and without -ffast-math: every float operation is one IEEE
   single-precision operation in the order written, as in torch. Each loop runs over one block of
   BLOCK entries held in float32 scratch arrays that stay in the L1 cache, so that the compiler
   vectorizes it. Inputs are bfloat16 (`bf16` non-zero: uint16 bit patterns) or float32. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 1024 /* entries per block: the scratch arrays stay in the L1 cache */
#define CHUNK 16   /* entries per chunk when collecting: a chunk without a hit costs one vector compare */

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

/* counts[row * width + p]: how many magnitudes of models[chosen[row]] are >= pivots[row * width + p] */
void count_at_least(const void *base, int base_bf16, const void *const *models, int model_bf16, int64_t n,
                    const int64_t *chosen, int64_t rows, const float *pivots, int64_t width, int64_t *counts) {
    float base_block[BLOCK], magnitudes[BLOCK];
    memset(counts, 0, (size_t)(rows * width) * sizeof(int64_t));
    for (int64_t start = 0; start < n; start += BLOCK) {
        int size = block_size(start, n);
        load_block(base_block, base, base_bf16, start, size);
        for (int64_t row = 0; row < rows; row++) {
            magnitudes_block(magnitudes, base_block, models[chosen[row]], model_bf16, start, size);
            for (int64_t p = 0; p < width; p++) {
                float pivot = pivots[row * width + p];
                int32_t count = 0;
                for (int j = 0; j < size; j++)
                    count += magnitudes[j] >= pivot;
                counts[row * width + p] += count;
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

/* The block index (of `size` entries) before which entries tied with the threshold are kept:
   the model keeps *ties_left more of them, the first ones in index order. */
static int tied_kept_before(const float *task_vector, int size, float threshold, int tied, int64_t *ties_left) {
    if (tied <= *ties_left) {
        *ties_left -= tied;
        return size;
    }
    int64_t seen = 0;
    for (int j = 0; j < size; j++) {
        if (fabsf(task_vector[j]) == threshold) {
            if (seen == *ties_left) {
                *ties_left = 0;
                return j;
            }
            seen++;
        }
    }
    return size;
}

/* Entries begin..end of the merge into out[0:end - begin]: trim, weight, elect, disjoint mean,
   lambda, + base, the operations of ties.ties in its order. Adds to the per-model counts of
   trimmed (non-zero) and agreeing entries; sets nonfinite[0] (base) or nonfinite[i + 1] (model i)
   where an input holds a NaN or an infinity. Returns 0, or -1 when out of memory. */
int merge_pass(const void *base, int base_bf16, const void *const *models, int model_bf16, int64_t count,
               int64_t begin, int64_t end, const float *thresholds, int64_t *ties_left, const float *weights,
               float lambda, int normalize, int by_sum, void *out, int out_bf16, int64_t *nonzero,
               int64_t *agreeing, uint8_t *nonfinite) {
    float *weighted = malloc((size_t)count * BLOCK * sizeof(float)); /* one row per model */
    if (!weighted)
        return -1;
    float base_block[BLOCK], sign[BLOCK], total[BLOCK], divisor[BLOCK];
    for (int64_t start = begin; start < end; start += BLOCK) {
        int size = block_size(start, end);
        int32_t finite = 0;
        load_block(base_block, base, base_bf16, start, size);
        for (int j = 0; j < size; j++)
            finite += fabsf(base_block[j]) < INFINITY;
        nonfinite[0] |= finite != size;
        for (int64_t i = 0; i < count; i++) {
            float *row = weighted + i * BLOCK, threshold = thresholds[i], weight = weights[i];
            int32_t tied = 0, kept = 0;
            finite = 0;
            load_block(row, models[i], model_bf16, start, size);
            for (int j = 0; j < size; j++) { /* the task vector, and how many entries tie with the threshold */
                finite += fabsf(row[j]) < INFINITY;
                row[j] = row[j] - base_block[j];
                tied += fabsf(row[j]) == threshold;
            }
            nonfinite[i + 1] |= finite != size;
            int ties_end = tied_kept_before(row, size, threshold, tied, &ties_left[i]);
            for (int j = 0; j < size; j++) { /* trimmed, then weighted */
                float magnitude = fabsf(row[j]);
                int keep = (magnitude > threshold) | ((magnitude == threshold) & (j < ties_end));
                float trimmed = row[j] * (keep ? 1.0f : 0.0f);
                kept += trimmed != 0.0f;
                row[j] = trimmed * weight;
            }
            nonzero[i] += kept;
        }
        for (int j = 0; j < size; j++) /* the elected sign: + where the score (0 + w_0 + w_1 + ...) is >= 0 */
            sign[j] = 0.0f;
        for (int64_t i = 0; i < count; i++) {
            const float *row = weighted + i * BLOCK;
            for (int j = 0; j < size; j++)
                sign[j] += by_sum ? row[j] : (float)(row[j] > 0.0f) - (float)(row[j] < 0.0f);
        }
        for (int j = 0; j < size; j++) {
            sign[j] = sign[j] >= 0.0f ? 1.0f : -1.0f;
            total[j] = divisor[j] = 0.0f; /* 0 + ...: the first addition turns -0.0 into +0.0, as in ties */
        }
        for (int64_t i = 0; i < count; i++) { /* the disjoint mean over entries that agree with the sign */
            const float *row = weighted + i * BLOCK;
            float weight = weights[i];
            int32_t agree = 0;
            for (int j = 0; j < size; j++) {
                int agrees = row[j] * sign[j] > 0.0f;
                float masked = row[j] * (agrees ? 1.0f : 0.0f);
                agree += agrees;
                total[j] += masked;
                divisor[j] += weight * (masked != 0.0f ? 1.0f : 0.0f);
            }
            agreeing[i] += agree;
        }
        for (int j = 0; j < size; j++) {
            float merged = total[j];
            if (normalize)
                merged = merged / (divisor[j] == 0.0f ? 1.0f : divisor[j]);
            if (lambda != 1.0f)
                merged = merged * lambda;
            total[j] = merged + base_block[j];
        }
        store_block(out, out_bf16, start - begin, total, size);
    }
    free(weighted);
    return 0;
}
