/* The communication module: the only file set that includes mpi.h.
 *
 * Every function taking an nd_comm is *collective* over it unless noted:
 * all ranks must call it, in the same order. Failures are returned as
 * status codes (MPI errors are set to return, not abort); the caller's top
 * level decides to end the job. */
#ifndef NNDIST_COMM_H
#define NNDIST_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "nndist/status.h"

typedef struct nd_comm nd_comm;

/* Initializes MPI (unless already initialized) and returns the world
 * communicator. Not collective in the nd_comm sense: every process calls it
 * once. A process started without mpirun is a world of one. */
nd_status nd_comm_init(int *argc, char ***argv, nd_comm **world, nd_error *err);

/* A communicator of just this process (for tests and rank-local runs). */
nd_status nd_comm_self(nd_comm **self, nd_error *err);

/* Collective: splits comm into groups of equal color (rank order kept);
 * a rank with color < 0 gets *out = NULL. */
nd_status nd_comm_split(nd_comm *comm, int color, nd_comm **out, nd_error *err);

void nd_comm_free(nd_comm *comm);

/* Ends MPI after every nd_comm is freed. */
void nd_comm_finalize(void);

/* Ends every process of the job with exit code `code` (not collective). */
_Noreturn void nd_comm_abort(const nd_comm *comm, int code);

int nd_comm_rank(const nd_comm *comm);
int nd_comm_size(const nd_comm *comm);

/* Number of ranks of comm on this rank's node (shared-memory domain). */
int nd_comm_local_size(const nd_comm *comm);

/* Seconds on a monotonic clock (not collective). Under SimGrid
 * (ND_SIMGRID) the simulated time. */
double nd_comm_time(void);

/* 1 in a build for SimGrid's SMPI (-DNNDIST_SIMGRID=ON), else 0. */
int nd_comm_simulated(void);

/* Runs compute(ctx), one step's compute (not collective). Under SimGrid
 * with samples > 0, SMPI's global sampling: the first `samples` calls over
 * all simulated ranks run and are timed; every later call is skipped and
 * the mean time of those is simulated instead, so the values it would have
 * written are stale (time is predicted, accuracy is not). Elsewhere, or
 * with samples 0: compute(ctx). */
void nd_comm_sampled(int samples, void (*compute)(void *ctx), void *ctx);

/* Under SimGrid: `seconds` of simulated computation on this rank's host
 * (smpi_execute), for compute that is stated rather than run (--sim-step-ms).
 * Elsewhere nothing. Not collective. */
void nd_comm_sim_compute(double seconds);

/* In-place sums of buf (n) over all ranks; n may exceed INT_MAX. */
nd_status nd_comm_allreduce_sum_f32(nd_comm *comm, float *buf, size_t n, nd_error *err);
nd_status nd_comm_allreduce_sum_f64(nd_comm *comm, double *buf, size_t n, nd_error *err);

/* In-place exact integer sum: the result does not depend on the reduction
 * order (deterministic mode sums fixed-point gradients with it). */
nd_status nd_comm_allreduce_sum_i64(nd_comm *comm, long long *buf, size_t n, nd_error *err);

/* In-place minimum / maximum of buf (n) over all ranks. */
nd_status nd_comm_allreduce_min_long(nd_comm *comm, long *buf, size_t n, nd_error *err);
nd_status nd_comm_allreduce_max_f64(nd_comm *comm, double *buf, size_t n, nd_error *err);

/* ZeRO-1's pair. Sums send (the sum of counts) over all ranks and leaves
 * block r of the result, counts[r] floats, in recv on rank r. */
nd_status nd_comm_reduce_scatter_f32(nd_comm *comm, const float *send, float *recv, const int *counts, nd_error *err);
/* In place: block r of buf (counts[r] floats at displs[r]) comes from rank r. */
nd_status nd_comm_allgatherv_f32(nd_comm *comm, float *buf, const int *counts, const int *displs, nd_error *err);

/* Top-k's exchange: every rank's send (n bytes) lands at recv + r n on
 * every rank (recv: size x n bytes). */
nd_status nd_comm_allgather_bytes(nd_comm *comm, const void *send, size_t n, void *recv, nd_error *err);

/* Copies buf (n) of rank root to every rank. */
nd_status nd_comm_bcast_f32(nd_comm *comm, float *buf, size_t n, int root, nd_error *err);
nd_status nd_comm_bcast_f64(nd_comm *comm, double *buf, size_t n, int root, nd_error *err);
/* A plain struct's bytes (every rank runs the same binary). */
nd_status nd_comm_bcast_bytes(nd_comm *comm, void *buf, size_t n, int root, nd_error *err);
/* Collective: rank r's send (n bytes) lands at recv + r n on root
 * (recv: size x n bytes there, unused elsewhere). */
nd_status nd_comm_gather_bytes(nd_comm *comm, const void *send, size_t n, void *recv, int root, nd_error *err);

/* Not collective: a launch mistake, seen from this process. The environment
 * names the launcher's task count (SLURM_STEP_NUM_TASKS, PMI_SIZE,
 * PMIX_SIZE... or OMPI_COMM_WORLD_SIZE); if it disagrees with the MPI
 * world (each copy started alone, as `srun` without MPI support does), the
 * error says so and how to launch. */
nd_status nd_comm_check_launch(const nd_comm *world, nd_error *err);

/* Error agreement: every rank says whether it failed; returns the lowest
 * failed rank, or -1 when all succeeded (a communication failure counts as
 * this rank failing). Used after each setup stage so that no rank enters a
 * collective that another rank will never reach. */
int nd_comm_first_failed(nd_comm *comm, int failed);

/* Collective: a local status made job-wide. Only the lowest failing rank
 * keeps its message; the others return the failure with an empty message,
 * so the job prints exactly one line and no rank goes on into a collective
 * alone. */
nd_status nd_comm_agree(nd_comm *comm, nd_status st, nd_error *err);

/* nd_comm_agree, and *agreed = 1 when the verdict is a failure every rank
 * reached (none is left inside a collective, so the job may end normally);
 * 0 when all succeeded or the agreement itself could not be made. */
nd_status nd_comm_agree_verdict(nd_comm *comm, nd_status st, int *agreed, nd_error *err);

nd_status nd_comm_barrier(nd_comm *comm, nd_error *err);

/* The stall watchdog: the waits of training steps started from now on
 * (nd_comm_arrive, non-blocking requests) give up after `seconds` (0: wait
 * forever). Not collective; every rank sets the same. */
void nd_comm_set_timeout(nd_comm *comm, double seconds);

/* Collective: every rank arrives at step `step` of operation `what` (a
 * barrier: each rank tells rank 0, rank 0 answers once all have come).
 * With a watchdog time, rank 0 gives up after it naming the ranks that did
 * not arrive; another rank gives up somewhat later (so rank 0 speaks
 * first), saying it heard nothing from rank 0. */
nd_status nd_comm_arrive(nd_comm *comm, long step, const char *what, nd_error *err);

/* ---- point-to-point (not collective) ------------------------------------ */

#define ND_ANY_SOURCE (-1)

/* A pending non-blocking operation. Plain storage, so arrays of requests
 * can live in preallocated state (no allocation per message). */
typedef struct {
    unsigned long long handle;
    int active;
    int peer;       /* the other rank (ND_ANY_SOURCE: any), named when a wait times out */
    double timeout; /* the communicator's watchdog when started (0: wait forever) */
} nd_request;

/* Start sending buf (n) to dest / receiving up to n values into buf from
 * source (or ND_ANY_SOURCE). buf must stay untouched until completion. */
nd_status nd_comm_isend_f32(nd_comm *comm, const float *buf, size_t n, int dest, int tag, nd_request *req,
                            nd_error *err);
nd_status nd_comm_irecv_f32(nd_comm *comm, float *buf, size_t n, int source, int tag, nd_request *req, nd_error *err);
nd_status nd_comm_isend_f64(nd_comm *comm, const double *buf, size_t n, int dest, int tag, nd_request *req,
                            nd_error *err);
nd_status nd_comm_irecv_f64(nd_comm *comm, double *buf, size_t n, int source, int tag, nd_request *req, nd_error *err);

/* Collective: starts an in-place sum of buf (n <= INT_MAX) over all
 * ranks; buf must stay untouched until the request completes. Ranks must
 * start their non-blocking collectives in the same order. */
nd_status nd_comm_iallreduce_sum_f32(nd_comm *comm, float *buf, size_t n, nd_request *req, nd_error *err);

/* The 16-bit wire formats' pair (--compress fp16|bf16; values are raw
 * 16-bit patterns, never added by MPI). alltoall: block r of send (count
 * values at r count) goes to rank r, which finds rank q's block at recv +
 * q count (send and recv: size x count each, distinct). allgather: rank
 * r's send (count) lands at recv + r count on every rank. count <= INT_MAX. */
nd_status nd_comm_alltoall_u16(nd_comm *comm, const uint16_t *send, uint16_t *recv, size_t count, nd_error *err);
nd_status nd_comm_allgather_u16(nd_comm *comm, const uint16_t *send, uint16_t *recv, size_t count, nd_error *err);
/* Their non-blocking forms: the buffers stay untouched until req completes
 * (nd_comm_test_all, nd_comm_wait_all_busy); started in the same order on
 * every rank. */
nd_status nd_comm_ialltoall_u16(nd_comm *comm, const uint16_t *send, uint16_t *recv, size_t count, nd_request *req,
                                nd_error *err);
nd_status nd_comm_iallgather_u16(nd_comm *comm, const uint16_t *send, uint16_t *recv, size_t count, nd_request *req,
                                 nd_error *err);

/* Not collective: lets MPI advance the active requests of reqs (count)
 * (Open MPI moves a non-blocking collective only inside MPI calls) and
 * marks the finished ones inactive. */
nd_status nd_comm_test_all(nd_request *reqs, int count, nd_error *err);

/* Not collective: blocks (busy, inside MPI) until every active request of
 * reqs (count) is done; for a rank with nothing else to do. */
nd_status nd_comm_wait_all_busy(nd_request *reqs, int count, nd_error *err);

/* Waits for every active request of reqs (count); gives up with a line
 * naming the ranks that did not answer once the requests' watchdog time
 * (nd_comm_set_timeout) has passed. It polls and sleeps with a
 * growing back-off (1 us doubling to 64 us) instead of spinning, so a waiting rank
 * leaves its core to a computing rank on the same node. *source, if not
 * NULL, receives the sender of reqs[0] when it was a receive. */
nd_status nd_comm_wait_all(nd_request *reqs, int count, int *source, nd_error *err);

/* ---- the node's shared-memory sum ---------------------------------------- */

/* When every rank of a communicator runs on one node, the gradient's sum
 * needs no messages: each rank's buffer lives in memory the node's ranks
 * share (an MPI shared window), and each rank adds up its own 1/size of
 * every buffer and writes the sum into all of them. No copies, no staging
 * buffers, no MPI progress, and the summing is split evenly: on 2 ranks
 * it moves half the bytes Open MPI's allreduce moves (docs/performance.md). */
typedef struct nd_node_sum nd_node_sum;

/* Collective: a shared buffer of n floats for each rank of comm, zeroed;
 * *out = NULL (and ND_OK) when comm has one rank, spans several nodes, or
 * the shared window cannot be made (every rank then agrees on NULL). */
nd_status nd_node_sum_create(nd_comm *comm, size_t n, nd_node_sum **out, nd_error *err);

/* This rank's buffer (n floats, 64-byte aligned); not collective. */
float *nd_node_sum_buffer(nd_node_sum *s);

/* Collective: waits until every rank has arrived at `step` (a barrier
 * through the shared memory). With the communicator's watchdog time
 * (nd_comm_set_timeout) it gives up after it, naming the ranks that did
 * not arrive for operation `what`. */
nd_status nd_node_sum_arrive(nd_node_sum *s, long step, const char *what, nd_error *err);

/* Collective, after nd_node_sum_arrive for the same step: buf[lo, hi) of
 * every rank (hi <= n) becomes the sum over ranks, added in rank order (on 2 ranks
 * exactly MPI_Allreduce's a + b); returns once every rank's share is
 * summed, so the buffers may be written again. */
nd_status nd_node_sum_reduce(nd_node_sum *s, size_t lo, size_t hi, long step, nd_error *err);

/* Collective (frees the window); NULL is fine. */
void nd_node_sum_free(nd_node_sum *s);

#endif
