/* The stall watchdog's second half (--timeout). The first half is in the
 * step itself: nd_comm_arrive and the timed request waits give up on their
 * own and name the ranks that did not come. But once every rank has
 * arrived, the gradient's blocking MPI_Allreduce has no time limit, and a
 * rank stopped inside it would hold the others there forever. A blocking
 * call cannot be interrupted from inside, so a thread watches instead: the
 * step marks when it enters and leaves that exchange, and the few
 * collectives at an epoch's edges (two relaxed atomic
 * stores: nothing measurable), and if it stays inside longer than the
 * limit the thread prints the one line and ends this process. The launcher
 * (mpirun, srun --kill-on-bad-exit) then ends the job, every rank of which
 * has its own watchdog: no rank is left waiting. This is the one place
 * outside main that ends the program, because the thread that would
 * return the status is the one that is stuck. */
#include "nndist/watchdog.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct nd_watchdog {
    int rank;
    double limit;
    pthread_t thread;
    pthread_mutex_t mu; /* with cv: stop wakes the thread at once instead of after its nap */
    pthread_cond_t cv;
    atomic_int quit;
    _Atomic(const char *) what; /* the exchange under way, NULL: none */
    atomic_long step;
    atomic_llong since_ns; /* when it began (CLOCK_MONOTONIC) */
};

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *watch(void *arg) {
    nd_watchdog *w = arg;
    /* Look four times per limit, at most every half second. */
    const double nap = w->limit / 4 < 0.5 ? w->limit / 4 : 0.5;
    long long last = now_ns();
    while (!atomic_load_explicit(&w->quit, memory_order_relaxed)) {
        struct timespec until; /* the condition variable's clock is CLOCK_REALTIME */
        clock_gettime(CLOCK_REALTIME, &until);
        const long long ns = (long long)until.tv_nsec + (long long)(nap * 1e9);
        until.tv_sec += (time_t)(ns / 1000000000LL);
        until.tv_nsec = (long)(ns % 1000000000LL);
        pthread_mutex_lock(&w->mu);
        if (!atomic_load_explicit(&w->quit, memory_order_relaxed)) pthread_cond_timedwait(&w->cv, &w->mu, &until);
        pthread_mutex_unlock(&w->mu);
        if (atomic_load_explicit(&w->quit, memory_order_relaxed)) break;
        /* A nap that lasted far longer than asked means this very process
         * was stopped (SIGSTOP, a frozen VM): it is not for it to blame the
         * others for the time it lost. Look again next round. */
        const long long woke = now_ns();
        const int was_stopped = (double)(woke - last) * 1e-9 > 2.0 * nap + 1.0;
        last = woke;
        if (was_stopped) {
            atomic_store_explicit(&w->since_ns, woke, memory_order_relaxed);
            continue;
        }
        const char *what = atomic_load_explicit(&w->what, memory_order_acquire);
        if (!what) continue;
        const double inside = (double)(now_ns() - atomic_load_explicit(&w->since_ns, memory_order_relaxed)) * 1e-9;
        if (inside <= w->limit || atomic_load_explicit(&w->what, memory_order_acquire) != what) continue;
        fprintf(stderr,
                "nndist: error: rank %d: step %ld: %s did not complete within %g s (a rank stopped, hung or died "
                "inside it): ending the job\n",
                w->rank, atomic_load_explicit(&w->step, memory_order_relaxed), what, w->limit);
        fflush(NULL);
        _exit(3);
    }
    return NULL;
}

nd_status nd_watchdog_start(nd_watchdog **out, int rank, double limit, nd_error *err) {
    *out = NULL;
#ifdef ND_SIMGRID
    /* No thread under SMPI (a simulated rank is not an OS thread of its
     * own), and no stall to watch for in simulated time. */
    limit = 0.0;
#endif
    if (!(limit > 0.0)) return ND_OK;
    nd_watchdog *w = calloc(1, sizeof *w);
    if (!w) return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the stall watchdog");
    w->rank = rank;
    w->limit = limit;
    atomic_init(&w->quit, 0);
    atomic_init(&w->what, NULL);
    atomic_init(&w->step, 0);
    atomic_init(&w->since_ns, 0);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, watch, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
        return ND_FAIL(err, ND_ERR_STATE, "cannot start the stall watchdog's thread");
    }
    *out = w;
    return ND_OK;
}

void nd_watchdog_enter(nd_watchdog *w, const char *what, long step) {
    if (!w) return;
    atomic_store_explicit(&w->step, step, memory_order_relaxed);
    atomic_store_explicit(&w->since_ns, now_ns(), memory_order_relaxed);
    atomic_store_explicit(&w->what, what, memory_order_release);
}

void nd_watchdog_leave(nd_watchdog *w) {
    if (w) atomic_store_explicit(&w->what, NULL, memory_order_release);
}

void nd_watchdog_stop(nd_watchdog *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    atomic_store_explicit(&w->quit, 1, memory_order_relaxed);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
