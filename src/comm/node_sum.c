/* The node's shared-memory sum (nndist/comm.h): every rank's buffer in one
 * MPI shared window, a barrier through flags in the same window, and each
 * rank summing its own share of all buffers. Measured on 2 ranks here
 * (docs/performance.md): Open MPI's allreduce of a 2 MB gradient copies it
 * through the kernel (CMA) and sums it whole on each rank; this sums half
 * on each, in place, and its barrier is one cache line. */
#include "nndist/comm.h"

#include <mpi.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_internal.h"

enum { LINE = 64, PAGE = 4096, BLOCK = 1024 /* floats summed per pass of the general case */ };

struct nd_node_sum {
    nd_comm *comm;
    MPI_Comm node;
    MPI_Win win;
    int rank, size;
    size_t n;
    long seq;             /* calls so far: the flags' value, the same on every rank */
    float **buf;          /* (size) every rank's buffer, in this process's addresses */
    atomic_long *arrived; /* flag of rank q at arrived[q * LINE / sizeof(atomic_long)] */
    atomic_long *summed;  /* likewise: rank q's share of the sum is done */
};

static size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

static atomic_long *flag(atomic_long *base, int q) { return base + (size_t)q * (LINE / sizeof(atomic_long)); }

nd_status nd_node_sum_create(nd_comm *comm, size_t n, nd_node_sum **out, nd_error *err) {
    *out = NULL;
    const int size = nd_comm_size(comm), rank = nd_comm_rank(comm);
    if (size < 2 || nd_comm_local_size(comm) != size) return ND_OK; /* local_size: the same on every rank */
#ifdef ND_SIMGRID /* simulated ranks share no memory the simulator sees: its allreduce is the one modelled */
    (void)rank, (void)err;
    return ND_OK;
#endif
    _Static_assert(ATOMIC_LONG_LOCK_FREE == 2, "the flags must be lock-free to be shared between processes");
    nd_node_sum *s = calloc(1, sizeof *s);
    float **buf = calloc((size_t)size, sizeof *buf);
    MPI_Comm node = MPI_COMM_NULL;
    MPI_Win win = MPI_WIN_NULL;
    /* Rank 0 allocates it all: one block, laid out here from its first
     * page boundary (Open MPI puts a header before it). */
    const size_t ctrl = round_up(2 * (size_t)size * LINE, PAGE), stride = round_up(n * sizeof(float), PAGE);
    const size_t total = ctrl + (size_t)size * stride + PAGE;
    void *base = NULL;
    /* Every rank makes the split, whatever its allocations gave: a collective skipped on one rank would hang. */
    const int split = MPI_Comm_split_type(nd_comm_mpi(comm), MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS;
    int ok = s && buf && split;
    if (ok) {
        int node_size = 0;
        MPI_Comm_size(node, &node_size);
        ok = node_size == size;
    }
    /* Agreed before the window's collective allocation, which every rank must make or none. */
    int before = ok;
    if (MPI_Allreduce(&before, &ok, 1, MPI_INT, MPI_MIN, nd_comm_mpi(comm)) != MPI_SUCCESS) ok = 0;
    if (ok) {
        MPI_Comm_set_errhandler(node, MPI_ERRORS_RETURN);
        ok = MPI_Win_allocate_shared(rank == 0 ? (MPI_Aint)total : 0, 1, MPI_INFO_NULL, node, &base, &win) ==
            MPI_SUCCESS;
    }
    char *block = NULL;
    if (ok) {
        MPI_Aint bytes = 0;
        int unit = 0;
        ok = MPI_Win_shared_query(win, 0, &bytes, &unit, &block) == MPI_SUCCESS && (size_t)bytes >= total;
        /* The mapping is page-aligned in every process: the same offset. */
        if (ok) block += (PAGE - (uintptr_t)block % PAGE) % PAGE;
    }
    /* Every rank takes the same way: the window on all, or on none. */
    int all = ok;
    if (MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, nd_comm_mpi(comm)) != MPI_SUCCESS) all = 0;
    if (!all) {
        if (win != MPI_WIN_NULL) MPI_Win_free(&win);
        if (node != MPI_COMM_NULL) MPI_Comm_free(&node);
        free(buf), free(s);
        return s && buf ? ND_OK : ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the shared-memory sum's table");
    }
    *s = (nd_node_sum){.comm = comm, .node = node, .win = win, .rank = rank, .size = size, .n = n, .buf = buf};
    s->arrived = (atomic_long *)(void *)block;
    s->summed = (atomic_long *)(void *)(block + (size_t)size * LINE);
    for (int q = 0; q < size; ++q) s->buf[q] = (float *)(void *)(block + ctrl + (size_t)q * stride);
    /* Each rank zeroes (first touches) what it writes most. */
    memset(s->buf[rank], 0, stride);
    atomic_init(flag(s->arrived, rank), 0);
    atomic_init(flag(s->summed, rank), 0);
    /* Load/store access for the window's life: a passive epoch on all. */
    MPI_Win_lock_all(MPI_MODE_NOCHECK, win);
    MPI_Barrier(node);
    *out = s;
    return ND_OK;
}

float *nd_node_sum_buffer(nd_node_sum *s) { return s->buf[s->rank]; }

void nd_node_sum_free(nd_node_sum *s) {
    if (!s) return;
    MPI_Win_unlock_all(s->win);
    MPI_Win_free(&s->win);
    MPI_Comm_free(&s->node);
    free(s->buf);
    free(s);
}

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Waits until every rank's flag in flags reaches seq. Spins for the first
 * 50 us (a step's wait is usually shorter), then yields the core (the
 * slower rank may share it) and after 2 ms naps 50 us between looks. With
 * the watchdog time it gives up after it: 0. 1: all there. */
static int wait_flags(const nd_node_sum *s, atomic_long *flags, long seq) {
    const double timeout = nd_comm_timeout(s->comm), t0 = nd_comm_time();
    double until = timeout > 0.0 ? t0 + timeout : 0.0, last = t0;
    for (int q = 0; q < s->size; ++q) {
        for (long k = 0; atomic_load_explicit(flag(flags, q), memory_order_acquire) < seq; ++k) {
            if (k < 64) {
                relax();
                continue;
            }
            const double now = nd_comm_time();
            /* Looks a second apart: this process itself was stopped; the
             * time it lost is not the others' to answer for. */
            if (until > 0.0 && now - last > 1.0) until += now - last;
            last = now;
            if (until > 0.0 && now > until) return 0;
            if (now - t0 < 50e-6) relax();
            else if (now - t0 < 2e-3) sched_yield();
            else {
                const struct timespec nap = {0, 50000};
                nanosleep(&nap, NULL);
            }
        }
    }
    return 1;
}

/* The ranks (from first) whose flag has not reached seq, as "1, 3". */
static int name_missing(const nd_node_sum *s, atomic_long *flags, long seq, char *who, size_t cap) {
    size_t len = 0;
    int missing = 0;
    who[0] = '\0';
    for (int q = 0; q < s->size; ++q) {
        if (atomic_load_explicit(flag(flags, q), memory_order_acquire) >= seq) continue;
        missing += 1;
        if (len + 16 < cap) len += (size_t)snprintf(who + len, cap - len, "%s%d", len ? ", " : "", q);
    }
    return missing;
}

nd_status nd_node_sum_arrive(nd_node_sum *s, long step, const char *what, nd_error *err) {
    const long seq = ++s->seq;
    atomic_store_explicit(flag(s->arrived, s->rank), seq, memory_order_release);
    if (wait_flags(s, s->arrived, seq)) return ND_OK;
    char who[256];
    const int missing = name_missing(s, s->arrived, seq, who, sizeof who);
    return ND_FAIL(err, ND_ERR_COMM,
                   "step %ld: %s: rank%s %s did not arrive within %g s (stopped, hung or dead): ending the job", step,
                   what, missing > 1 ? "s" : "", missing ? who : "?", nd_comm_timeout(s->comm));
}

/* Rank r's share of [lo, hi): whole cache lines, so no two ranks write one. */
static void share_of(const nd_node_sum *s, int r, size_t lo, size_t hi, size_t *from, size_t *to) {
    const size_t per = round_up((hi - lo + (size_t)s->size - 1) / (size_t)s->size, LINE / sizeof(float));
    *from = lo + (size_t)r * per < hi ? lo + (size_t)r * per : hi;
    *to = *from + per < hi ? *from + per : hi;
}

static void sum_pair(float *restrict a, float *restrict b, size_t len) {
    for (size_t i = 0; i < len; ++i) {
        const float v = a[i] + b[i];
        a[i] = v;
        b[i] = v;
    }
}

nd_status nd_node_sum_reduce(nd_node_sum *s, size_t lo, size_t hi, long step, nd_error *err) {
    const long seq = s->seq; /* the arrival's */
    size_t from, to;
    share_of(s, s->rank, lo, hi < s->n ? hi : s->n, &from, &to);
    if (s->size == 2) {
        sum_pair(s->buf[0] + from, s->buf[1] + from, to - from);
    } else {
        float part[BLOCK]; /* in rank order: ((b0 + b1) + b2) + ... */
        for (size_t i = from; i < to; i += BLOCK) {
            const size_t len = to - i < BLOCK ? to - i : BLOCK;
            memcpy(part, s->buf[0] + i, len * sizeof(float));
            for (int q = 1; q < s->size; ++q) {
                const float *restrict b = s->buf[q] + i;
                for (size_t j = 0; j < len; ++j) part[j] += b[j];
            }
            for (int q = 0; q < s->size; ++q) memcpy(s->buf[q] + i, part, len * sizeof(float));
        }
    }
    atomic_store_explicit(flag(s->summed, s->rank), seq, memory_order_release);
    if (wait_flags(s, s->summed, seq)) return ND_OK;
    char who[256];
    const int missing = name_missing(s, s->summed, seq, who, sizeof who);
    return ND_FAIL(err, ND_ERR_COMM,
                   "step %ld: the gradient's shared-memory sum: the share of rank%s %s did not complete within %g s "
                   "(stopped, hung or dead): ending the job",
                   step, missing > 1 ? "s" : "", missing ? who : "?", nd_comm_timeout(s->comm));
}
