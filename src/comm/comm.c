#include "nndist/comm.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_internal.h"

struct nd_comm {
    MPI_Comm comm;
    int rank, size;
    int local_size;
    double timeout;           /* the stall watchdog, seconds (0: off) */
    long *arrivals;           /* (size) rank 0: the step each rank reported; [0]: this rank's own */
    long go;                  /* rank 0's answer */
    MPI_Request *arrive_reqs; /* (size) */
};

/* Large buffers go in pieces, since MPI counts are int. */
#define MAX_CHUNK ((size_t)1 << 30)

static nd_status mpi_fail(nd_error *err, int rc, const char *what) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    return ND_FAIL(err, ND_ERR_COMM, "MPI %s failed: %.*s", what, len, text);
}

static nd_status wrap(MPI_Comm c, nd_comm **out, nd_error *err) {
    nd_comm *nc = calloc(1, sizeof *nc);
    if (!nc) return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate a communicator");
    int rc = MPI_Comm_dup(c, &nc->comm);
    if (rc != MPI_SUCCESS) {
        free(nc);
        return mpi_fail(err, rc, "Comm_dup");
    }
    MPI_Comm_set_errhandler(nc->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(nc->comm, &nc->rank);
    MPI_Comm_size(nc->comm, &nc->size);
    nc->arrivals = calloc((size_t)nc->size, sizeof(long));
    nc->arrive_reqs = calloc((size_t)nc->size, sizeof(MPI_Request));
    if (!nc->arrivals || !nc->arrive_reqs) {
        MPI_Comm_free(&nc->comm);
        free(nc->arrivals), free(nc->arrive_reqs), free(nc);
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate a communicator's arrival table");
    }
    MPI_Comm node;
    nc->local_size = 1;
    if (MPI_Comm_split_type(nc->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_size(node, &nc->local_size);
        MPI_Comm_free(&node);
    }
    *out = nc;
    return ND_OK;
}

nd_status nd_comm_init(int *argc, char ***argv, nd_comm **world, nd_error *err) {
    int inited = 0;
    MPI_Initialized(&inited);
    /* Open MPI's default non-blocking allreduce for few ranks is binomial
     * (a reduce, then a broadcast): 2.3x the blocking allreduce's time for
     * a 2 MB gradient here; the ring matches it. The user's own setting
     * (environment or mpirun -mca) wins: setenv does not overwrite. */
    if (!inited) setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "ring", 0);
    /* Funneled: only this thread calls MPI, but the process has others
     * (OpenBLAS's pool, the --stream-mb reader), which MPI_THREAD_SINGLE
     * would not allow. */
    int provided = MPI_THREAD_SINGLE;
    if (!inited && MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return ND_FAIL(err, ND_ERR_COMM, "MPI_Init_thread failed");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    return wrap(MPI_COMM_WORLD, world, err);
}

nd_status nd_comm_self(nd_comm **self, nd_error *err) { return wrap(MPI_COMM_SELF, self, err); }

nd_status nd_comm_split(nd_comm *comm, int color, nd_comm **out, nd_error *err) {
    MPI_Comm part;
    *out = NULL;
    int rc = MPI_Comm_split(comm->comm, color < 0 ? MPI_UNDEFINED : color, comm->rank, &part);
    if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "Comm_split");
    if (part == MPI_COMM_NULL) return ND_OK;
    nd_status st = wrap(part, out, err);
    MPI_Comm_free(&part);
    return st;
}

void nd_comm_free(nd_comm *comm) {
    if (!comm) return;
    MPI_Comm_free(&comm->comm);
    free(comm->arrivals);
    free(comm->arrive_reqs);
    free(comm);
}

void nd_comm_finalize(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

_Noreturn void nd_comm_abort(const nd_comm *comm, int code) {
    MPI_Abort(comm ? comm->comm : MPI_COMM_WORLD, code);
    exit(code); /* MPI_Abort does not return; this satisfies _Noreturn */
}

int nd_comm_rank(const nd_comm *comm) { return comm->rank; }
int nd_comm_size(const nd_comm *comm) { return comm->size; }
int nd_comm_local_size(const nd_comm *comm) { return comm->local_size; }

int nd_comm_simulated(void) {
#ifdef ND_SIMGRID
    return 1;
#else
    return 0;
#endif
}

void nd_comm_sim_compute(double seconds) {
#ifdef ND_SIMGRID
    if (seconds > 0.0) smpi_execute(seconds);
#else
    (void)seconds;
#endif
}

void nd_comm_sampled(int samples, void (*compute)(void *ctx), void *ctx) {
#ifdef ND_SIMGRID
    if (samples > 0) {
        /* One iteration per call; the samples are keyed by this line, over
         * all ranks (threshold 0: exactly `samples` measured calls). */
        SMPI_SAMPLE_GLOBAL(int once = 0, once < 1, ++once, samples, 0.0) compute(ctx);
        return;
    }
#else
    (void)samples;
#endif
    compute(ctx);
}

double nd_comm_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static nd_status allreduce(nd_comm *comm, void *buf, size_t n, MPI_Datatype type, size_t elem, MPI_Op op,
                           const char *what, nd_error *err) {
    if (comm->size == 1) return ND_OK;
    for (size_t off = 0; off < n; off += MAX_CHUNK) {
        size_t len = n - off < MAX_CHUNK ? n - off : MAX_CHUNK;
        int rc = MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * elem, (int)len, type, op, comm->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
    }
    return ND_OK;
}

nd_status nd_comm_allreduce_sum_f32(nd_comm *comm, float *buf, size_t n, nd_error *err) {
    return allreduce(comm, buf, n, MPI_FLOAT, sizeof(float), MPI_SUM, "Allreduce(sum, float)", err);
}

nd_status nd_comm_allreduce_sum_f64(nd_comm *comm, double *buf, size_t n, nd_error *err) {
    return allreduce(comm, buf, n, MPI_DOUBLE, sizeof(double), MPI_SUM, "Allreduce(sum, double)", err);
}

nd_status nd_comm_allreduce_sum_i64(nd_comm *comm, long long *buf, size_t n, nd_error *err) {
    return allreduce(comm, buf, n, MPI_LONG_LONG, sizeof(long long), MPI_SUM, "Allreduce(sum, int64)", err);
}

nd_status nd_comm_allreduce_min_long(nd_comm *comm, long *buf, size_t n, nd_error *err) {
    return allreduce(comm, buf, n, MPI_LONG, sizeof(long), MPI_MIN, "Allreduce(min, long)", err);
}

nd_status nd_comm_allreduce_max_f64(nd_comm *comm, double *buf, size_t n, nd_error *err) {
    return allreduce(comm, buf, n, MPI_DOUBLE, sizeof(double), MPI_MAX, "Allreduce(max, double)", err);
}

nd_status nd_comm_reduce_scatter_f32(nd_comm *comm, const float *send, float *recv, const int *counts, nd_error *err) {
    if (comm->size == 1) {
        memcpy(recv, send, sizeof(float) * (size_t)counts[0]);
        return ND_OK;
    }
    int rc = MPI_Reduce_scatter(send, recv, counts, MPI_FLOAT, MPI_SUM, comm->comm);
    return rc == MPI_SUCCESS ? ND_OK : mpi_fail(err, rc, "Reduce_scatter");
}

nd_status nd_comm_allgatherv_f32(nd_comm *comm, float *buf, const int *counts, const int *displs, nd_error *err) {
    if (comm->size == 1) return ND_OK;
    int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, MPI_FLOAT, comm->comm);
    return rc == MPI_SUCCESS ? ND_OK : mpi_fail(err, rc, "Allgatherv");
}

nd_status nd_comm_allgather_bytes(nd_comm *comm, const void *send, size_t n, void *recv, nd_error *err) {
    if (n > INT_MAX / (size_t)comm->size)
        return ND_FAIL(err, ND_ERR_ARG, "allgather of %zu bytes from %d ranks is too large", n, comm->size);
    if (comm->size == 1) {
        memcpy(recv, send, n);
        return ND_OK;
    }
    int rc = MPI_Allgather(send, (int)n, MPI_BYTE, recv, (int)n, MPI_BYTE, comm->comm);
    return rc == MPI_SUCCESS ? ND_OK : mpi_fail(err, rc, "Allgather");
}

nd_status nd_comm_bcast_f32(nd_comm *comm, float *buf, size_t n, int root, nd_error *err) {
    if (comm->size == 1) return ND_OK;
    for (size_t off = 0; off < n; off += MAX_CHUNK) {
        size_t len = n - off < MAX_CHUNK ? n - off : MAX_CHUNK;
        int rc = MPI_Bcast(buf + off, (int)len, MPI_FLOAT, root, comm->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "Bcast");
    }
    return ND_OK;
}

nd_status nd_comm_bcast_f64(nd_comm *comm, double *buf, size_t n, int root, nd_error *err) {
    if (comm->size == 1) return ND_OK;
    if (n > INT_MAX) return ND_FAIL(err, ND_ERR_ARG, "broadcast of %zu doubles is too large", n);
    int rc = MPI_Bcast(buf, (int)n, MPI_DOUBLE, root, comm->comm);
    return rc == MPI_SUCCESS ? ND_OK : mpi_fail(err, rc, "Bcast");
}

nd_status nd_comm_bcast_bytes(nd_comm *comm, void *buf, size_t n, int root, nd_error *err) {
    if (comm->size == 1) return ND_OK;
    if (n > INT_MAX) return ND_FAIL(err, ND_ERR_ARG, "broadcast of %zu bytes is too large", n);
    int rc = MPI_Bcast(buf, (int)n, MPI_BYTE, root, comm->comm);
    return rc == MPI_SUCCESS ? ND_OK : mpi_fail(err, rc, "Bcast");
}

nd_status nd_comm_gather_bytes(nd_comm *comm, const void *send, size_t n, void *recv, int root, nd_error *err) {
    if (n > INT_MAX) return ND_FAIL(err, ND_ERR_ARG, "gather of %zu bytes is too large", n);
    if (comm->size == 1) {
        memcpy(recv, send, n);
        return ND_OK;
    }
    int rc = MPI_Gather(send, (int)n, MPI_BYTE, recv, (int)n, MPI_BYTE, root, comm->comm);
    return rc == MPI_SUCCESS ? ND_OK : mpi_fail(err, rc, "Gather");
}

/* A positive integer from the environment, or 0. */
static long env_count(const char *name) {
    const char *v = getenv(name);
    char *end = NULL;
    long n = v && *v ? strtol(v, &end, 10) : 0;
    return end && *end == '\0' && n > 0 ? n : 0;
}

nd_status nd_comm_check_launch(const nd_comm *world, nd_error *err) {
    /* Open MPI's own launcher names the world it built: trust it first (under
     * mpirun in a Slurm job the Slurm variables describe the daemons). */
    const char *const names[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"};
    for (int i = 0; i < 4; ++i) {
        const long want = env_count(names[i]);
        if (!want) continue;
        if (want == world->size) return ND_OK;
        /* Slurm's count is the step's tasks, and only inside an srun step
         * (SLURM_STEP_ID set; a batch shell is none); only a world of one
         * (every task alone) is surely wrong then: mpirun may start fewer. */
        if (i == 3 && (world->size != 1 || !getenv("SLURM_STEP_ID"))) return ND_OK;
        return ND_FAIL(err, ND_ERR_ARG,
                       "%s=%ld but MPI gives this process a world of %d rank%s: the launcher started %ld copies "
                       "that do not know each other (srun without MPI support, or an MPI library other than the "
                       "one nndist was built with); launch with `srun --mpi=pmix` (or pmi2; `srun --mpi=list` "
                       "shows them) or `mpirun -np %ld`",
                       names[i], want, world->size, world->size == 1 ? "" : "s", want, want);
    }
    return ND_OK;
}

/* The lowest failed rank into *first (INT_MAX: none); an MPI return code. */
static int lowest_failed(nd_comm *comm, int failed, int *first) {
    int mine = failed ? comm->rank : INT_MAX;
    *first = mine;
    return comm->size > 1 ? MPI_Allreduce(&mine, first, 1, MPI_INT, MPI_MIN, comm->comm) : MPI_SUCCESS;
}

int nd_comm_first_failed(nd_comm *comm, int failed) {
    int first;
    if (lowest_failed(comm, failed, &first) != MPI_SUCCESS) return comm->rank;
    return first == INT_MAX ? -1 : first;
}

nd_status nd_comm_agree_verdict(nd_comm *comm, nd_status st, int *agreed, nd_error *err) {
    int first;
    *agreed = 0;
    const int rc = lowest_failed(comm, st != ND_OK, &first);
    if (rc != MPI_SUCCESS) return st != ND_OK ? st : mpi_fail(err, rc, "Allreduce (error agreement)");
    if (first == INT_MAX) return ND_OK;
    *agreed = 1;
    /* Every rank takes the first failure's kind, so all exit alike. */
    int code = first == comm->rank ? (int)st : (int)ND_ERR_STATE;
    if (comm->size > 1) MPI_Bcast(&code, 1, MPI_INT, first, comm->comm);
    if (first == comm->rank) return st;
    err->code = (nd_status)code;
    err->msg[0] = '\0';
    return err->code;
}

nd_status nd_comm_agree(nd_comm *comm, nd_status st, nd_error *err) {
    int agreed = 0;
    return nd_comm_agree_verdict(comm, st, &agreed, err);
}

nd_status nd_comm_barrier(nd_comm *comm, nd_error *err) {
    int rc = MPI_Barrier(comm->comm);
    return rc == MPI_SUCCESS ? ND_OK : mpi_fail(err, rc, "Barrier");
}

/* MPI_Request is a pointer (Open MPI) or an int (MPICH): it fits the handle. */
_Static_assert(sizeof(MPI_Request) <= sizeof(unsigned long long), "MPI_Request too large");

static MPI_Request *request_of(nd_request *r) { return (MPI_Request *)(void *)&r->handle; }

/* A request just started with MPI (rc), to or from peer. */
static nd_status start_peer(const nd_comm *comm, int rc, nd_request *req, int peer, const char *what, nd_error *err) {
    if (rc != MPI_SUCCESS) return mpi_fail(err, rc, what);
    req->active = 1;
    req->peer = peer;
    req->timeout = comm->timeout;
    return ND_OK;
}
enum { PEER_ALL = -2 }; /* a collective: every rank is the peer */

/* The watchdog's verdict on reqs still active after their time: one line
 * naming the peers that did not answer. */
static nd_status stalled(const nd_request *reqs, int count, double waited, nd_error *err) {
    char who[256] = "";
    size_t len = 0;
    int any = 0, all = 0;
    for (int i = 0; i < count; ++i) {
        if (!reqs[i].active) continue;
        if (reqs[i].peer == ND_ANY_SOURCE) any = 1;
        else if (reqs[i].peer == PEER_ALL) all = 1;
        int seen = 0; /* a peer with several requests is named once */
        for (int j = 0; j < i; ++j) seen |= reqs[j].active && reqs[j].peer == reqs[i].peer;
        if (reqs[i].peer >= 0 && !seen && len + 16 < sizeof who)
            len += (size_t)snprintf(who + len, sizeof who - len, "%s%d", len ? ", " : "", reqs[i].peer);
    }
    if (len)
        return ND_FAIL(err, ND_ERR_COMM, "no answer from rank %s within %g s (stopped, hung or dead): ending the job",
                       who, waited);
    return ND_FAIL(err, ND_ERR_COMM, "%s within %g s (a rank stopped, hung or died): ending the job",
                   any       ? "no message from any rank"
                       : all ? "a collective did not complete"
                             : "a request did not complete",
                   waited);
}

/* The largest watchdog time among reqs' active requests (0: none). */
static double requests_timeout(const nd_request *reqs, int count) {
    double t = 0.0;
    for (int i = 0; i < count; ++i)
        if (reqs[i].active && reqs[i].timeout > t) t = reqs[i].timeout;
    return t;
}


nd_status nd_comm_isend_f32(nd_comm *comm, const float *buf, size_t n, int dest, int tag, nd_request *req,
                            nd_error *err) {
    if (n > INT_MAX) return ND_FAIL(err, ND_ERR_ARG, "message of %zu floats is too large", n);
    return start_peer(comm, MPI_Isend(buf, (int)n, MPI_FLOAT, dest, tag, comm->comm, request_of(req)), req, dest,
                      "Isend", err);
}

nd_status nd_comm_irecv_f32(nd_comm *comm, float *buf, size_t n, int source, int tag, nd_request *req, nd_error *err) {
    if (n > INT_MAX) return ND_FAIL(err, ND_ERR_ARG, "message of %zu floats is too large", n);
    return start_peer(comm,
                      MPI_Irecv(buf, (int)n, MPI_FLOAT, source == ND_ANY_SOURCE ? MPI_ANY_SOURCE : source, tag,
                                comm->comm, request_of(req)),
                      req, source, "Irecv", err);
}

nd_status nd_comm_isend_f64(nd_comm *comm, const double *buf, size_t n, int dest, int tag, nd_request *req,
                            nd_error *err) {
    return start_peer(comm, MPI_Isend(buf, (int)n, MPI_DOUBLE, dest, tag, comm->comm, request_of(req)), req, dest,
                      "Isend", err);
}

nd_status nd_comm_irecv_f64(nd_comm *comm, double *buf, size_t n, int source, int tag, nd_request *req, nd_error *err) {
    return start_peer(comm,
                      MPI_Irecv(buf, (int)n, MPI_DOUBLE, source == ND_ANY_SOURCE ? MPI_ANY_SOURCE : source, tag,
                                comm->comm, request_of(req)),
                      req, source, "Irecv", err);
}

nd_status nd_comm_wait_all(nd_request *reqs, int count, int *source, nd_error *err) {
    const double limit = requests_timeout(reqs, count), t0 = limit > 0.0 ? nd_comm_time() : 0.0;
    long sleep_ns = 1000;
    enum { ND_WAIT_MAX_SLEEP_NS = 64000 }; /* caps the latency a sleeping waiter adds */
    for (;;) {
        int pending = 0;
        for (int i = 0; i < count; ++i) {
            if (!reqs[i].active) continue;
            int done = 0;
            MPI_Status status;
#ifdef ND_SIMGRID /* no timeout here (nd_comm_set_timeout): naps would be simulated delays */
            int rc = MPI_Wait(request_of(&reqs[i]), &status);
            done = 1;
#else
            int rc = MPI_Test(request_of(&reqs[i]), &done, &status);
#endif
            if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "Test");
            if (done) {
                reqs[i].active = 0;
                if (i == 0 && source) *source = status.MPI_SOURCE;
                sleep_ns = 1000; /* traffic: poll eagerly again */
            } else {
                pending = 1;
            }
        }
        if (!pending) return ND_OK;
        if (limit > 0.0 && nd_comm_time() - t0 > limit) return stalled(reqs, count, limit, err);
        struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL);
        if (sleep_ns < ND_WAIT_MAX_SLEEP_NS) sleep_ns *= 2;
    }
}

nd_status nd_comm_iallreduce_sum_f32(nd_comm *comm, float *buf, size_t n, nd_request *req, nd_error *err) {
    if (comm->size == 1) {
        req->active = 0;
        return ND_OK;
    }
    if (n > INT_MAX) return ND_FAIL(err, ND_ERR_ARG, "non-blocking allreduce of %zu floats is too large", n);
    return start_peer(comm, MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, comm->comm, request_of(req)),
                      req, PEER_ALL, "Iallreduce", err);
}

/* size == 1: rank 0's own block is the whole exchange. */
static void copy_u16(uint16_t *recv, const uint16_t *send, size_t count, nd_request *req) {
    memcpy(recv, send, sizeof(uint16_t) * count);
    if (req) req->active = 0;
}

nd_status nd_comm_alltoall_u16(nd_comm *comm, const uint16_t *send, uint16_t *recv, size_t count, nd_error *err) {
    if (comm->size == 1) return copy_u16(recv, send, count, NULL), ND_OK;
    if (count > INT_MAX) return ND_FAIL(err, ND_ERR_ARG, "alltoall of %zu 16-bit values per rank is too large", count);
    int rc = MPI_Alltoall(send, (int)count, MPI_UINT16_T, recv, (int)count, MPI_UINT16_T, comm->comm);
    return rc == MPI_SUCCESS ? ND_OK : mpi_fail(err, rc, "Alltoall");
}

nd_status nd_comm_allgather_u16(nd_comm *comm, const uint16_t *send, uint16_t *recv, size_t count, nd_error *err) {
    if (comm->size == 1) return copy_u16(recv, send, count, NULL), ND_OK;
    if (count > INT_MAX) return ND_FAIL(err, ND_ERR_ARG, "allgather of %zu 16-bit values per rank is too large", count);
    int rc = MPI_Allgather(send, (int)count, MPI_UINT16_T, recv, (int)count, MPI_UINT16_T, comm->comm);
    return rc == MPI_SUCCESS ? ND_OK : mpi_fail(err, rc, "Allgather");
}

nd_status nd_comm_ialltoall_u16(nd_comm *comm, const uint16_t *send, uint16_t *recv, size_t count, nd_request *req,
                                nd_error *err) {
    if (comm->size == 1) return copy_u16(recv, send, count, req), ND_OK;
    if (count > INT_MAX) return ND_FAIL(err, ND_ERR_ARG, "alltoall of %zu 16-bit values per rank is too large", count);
    return start_peer(comm,
                      MPI_Ialltoall(send, (int)count, MPI_UINT16_T, recv, (int)count, MPI_UINT16_T, comm->comm,
                                    request_of(req)),
                      req, PEER_ALL, "Ialltoall", err);
}

nd_status nd_comm_iallgather_u16(nd_comm *comm, const uint16_t *send, uint16_t *recv, size_t count, nd_request *req,
                                 nd_error *err) {
    if (comm->size == 1) return copy_u16(recv, send, count, req), ND_OK;
    if (count > INT_MAX) return ND_FAIL(err, ND_ERR_ARG, "allgather of %zu 16-bit values per rank is too large", count);
    return start_peer(comm,
                      MPI_Iallgather(send, (int)count, MPI_UINT16_T, recv, (int)count, MPI_UINT16_T, comm->comm,
                                     request_of(req)),
                      req, PEER_ALL, "Iallgather", err);
}

nd_status nd_comm_test_all(nd_request *reqs, int count, nd_error *err) {
    for (int i = 0; i < count; ++i) {
        if (!reqs[i].active) continue;
        int done = 0;
        int rc = MPI_Test(request_of(&reqs[i]), &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "Test");
        if (done) reqs[i].active = 0;
    }
    return ND_OK;
}

nd_status nd_comm_wait_all_busy(nd_request *reqs, int count, nd_error *err) {
    const double limit = requests_timeout(reqs, count), t0 = nd_comm_time();
    for (int i = 0; i < count; ++i) {
        if (!reqs[i].active) continue;
        int rc;
        if (limit > 0.0) { /* poll, so the watchdog can speak */
            int done = 0;
            while ((rc = MPI_Test(request_of(&reqs[i]), &done, MPI_STATUS_IGNORE)) == MPI_SUCCESS && !done)
                if (nd_comm_time() - t0 > limit) return stalled(reqs, count, limit, err);
        } else {
            rc = MPI_Wait(request_of(&reqs[i]), MPI_STATUS_IGNORE);
        }
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "Wait");
        reqs[i].active = 0;
    }
    return ND_OK;
}

void nd_comm_set_timeout(nd_comm *comm, double seconds) {
#ifdef ND_SIMGRID
    /* Simulated ranks do not stall, and timed polls would only cost
     * simulated time: every wait blocks (docs/simulation.md). */
    seconds = 0.0;
#endif
    comm->timeout = seconds > 0.0 ? seconds : 0.0;
}

/* Polls reqs (count) until all are done or `until` (a monotonic time; 0:
 * never) has passed; spins for the first 2 ms, then naps 50 us between
 * polls, so a long wait leaves the core to others. 1: done, 0: time is up. */
static int poll_until(MPI_Request *reqs, int count, double until, int *rc) {
    const double spin_end = nd_comm_time() + 2e-3;
    double last = nd_comm_time();
    for (;;) {
        int done = 0;
        if ((*rc = MPI_Testall(count, reqs, &done, MPI_STATUSES_IGNORE)) != MPI_SUCCESS) return 1;
        if (done) return 1;
        const double now = nd_comm_time();
        /* Polls a second apart: this process itself was stopped; the time
         * it lost is not the others' to answer for. */
        if (until > 0.0 && now - last > 1.0) until += now - last;
        last = now;
        if (until > 0.0 && now > until) return 0;
        const struct timespec nap = {0, 50000};
        if (now > spin_end) nanosleep(&nap, NULL);
    }
}

nd_status nd_comm_arrive(nd_comm *comm, long step, const char *what, nd_error *err) {
    if (comm->size == 1) return ND_OK;
    if (comm->timeout <= 0.0) return nd_comm_barrier(comm, err);
    enum { TAG_ARRIVE = 7101, TAG_GO = 7102 };
    const double t0 = nd_comm_time();
    MPI_Request *r = comm->arrive_reqs;
    int rc = MPI_SUCCESS;
    if (comm->rank == 0) {
        for (int q = 1; q < comm->size; ++q)
            if ((rc = MPI_Irecv(&comm->arrivals[q], 1, MPI_LONG, q, TAG_ARRIVE, comm->comm, &r[q])) != MPI_SUCCESS)
                return mpi_fail(err, rc, "Irecv (arrival)");
        if (!poll_until(r + 1, comm->size - 1, t0 + comm->timeout, &rc)) {
            /* Name the ranks whose word has not come (or came for another step). */
            char who[256] = "";
            size_t len = 0;
            int missing = 0;
            for (int q = 1; q < comm->size; ++q) {
                int done = 0;
                MPI_Test(&r[q], &done, MPI_STATUS_IGNORE);
                if (done && comm->arrivals[q] == step) continue;
                missing += 1;
                if (len + 16 < sizeof who)
                    len += (size_t)snprintf(who + len, sizeof who - len, "%s%d", len ? ", " : "", q);
            }
            return ND_FAIL(err, ND_ERR_COMM,
                           "step %ld: %s: rank%s %s did not arrive within %g s (stopped, hung or dead): ending the job",
                           step, what, missing > 1 ? "s" : "", who, comm->timeout);
        }
        if (rc != MPI_SUCCESS) return mpi_fail(err, rc, "Test (arrival)");
        comm->go = step;
        for (int q = 1; q < comm->size; ++q)
            if ((rc = MPI_Isend(&comm->go, 1, MPI_LONG, q, TAG_GO, comm->comm, &r[q])) != MPI_SUCCESS)
                return mpi_fail(err, rc, "Isend (go)");
        poll_until(r + 1, comm->size - 1, 0.0, &rc);
        return rc == MPI_SUCCESS ? ND_OK : mpi_fail(err, rc, "Wait (go)");
    }
    comm->arrivals[0] = step;
    if ((rc = MPI_Isend(&comm->arrivals[0], 1, MPI_LONG, 0, TAG_ARRIVE, comm->comm, &r[0])) != MPI_SUCCESS ||
        (rc = MPI_Irecv(&comm->go, 1, MPI_LONG, 0, TAG_GO, comm->comm, &r[1])) != MPI_SUCCESS)
        return mpi_fail(err, rc, "Isend/Irecv (arrival)");
    /* Later than rank 0's own deadline, so that rank 0, which knows who is
     * missing, is the one to speak when it can. */
    const double grace = comm->timeout / 2.0 + 1.0;
    if (!poll_until(r, 2, t0 + comm->timeout + grace, &rc))
        return ND_FAIL(err, ND_ERR_COMM,
                       "step %ld: %s: no word from rank 0 within %g s (rank 0, or a rank it waits for, stopped, hung "
                       "or died): ending the job",
                       step, what, comm->timeout + grace);
    return rc == MPI_SUCCESS ? ND_OK : mpi_fail(err, rc, "Test (arrival)");
}

MPI_Comm nd_comm_mpi(const nd_comm *comm) { return comm->comm; }
double nd_comm_timeout(const nd_comm *comm) { return comm->timeout; }
