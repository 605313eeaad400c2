/* libholdfast's C ABI: the trainer's side of holdfast for languages other
 * than C++ (and for dlopen: the shared library is libholdfast.so).
 *
 * A thin layer over the C++ API in holdfast/client/client.h; read that
 * header for what a snapshot, a step and a restore are. Here:
 *
 *   hf_client    a connection to the node's holdfastd (holdfast::client::Client)
 *   hf_snapshot  one asynchronous snapshot (holdfast::client::SnapshotHandle)
 *   hf_item_list the items of a stored version, read with hf_item_list_get
 *
 * Errors. Every function that can fail returns an int: HF_OK (0) or one of
 * the hf_code values, which equal holdfast's (and gRPC's) status codes.
 * hf_last_error() then gives this thread's message. Nothing throws across
 * this interface: C++ exceptions inside the library come back as
 * HF_RESOURCE_EXHAUSTED (out of memory) or HF_INTERNAL. Pointer arguments
 * the layer must read (options, items, names, shapes, targets, outputs) are
 * checked: NULL where a value is needed gives HF_INVALID_ARGUMENT with a
 * message naming the argument. What the C++ library checks itself (duplicate
 * item names, nbytes that disagree with dtype and shape, NULL item data, a
 * step not newer than the latest) is reported the way it reports it: for a
 * snapshot, on its handle.
 *
 * Outputs are written only on success. Functions ending in _free accept
 * NULL.
 *
 * Thread-safety: every function taking an hf_client may be called from any
 * thread, concurrently on the same client, except hf_client_free, which must
 * be the last call on that client. The functions taking an hf_snapshot may
 * be called concurrently on the same handle from several threads, except
 * hf_snapshot_free: a handle must not be freed while another thread uses it
 * (e.g. waits on it). An hf_item_list is immutable. hf_last_error is per
 * thread. Do not use a client in a child process after fork().
 *
 * The header compiles as C99 and as C++.
 */
#ifndef HOLDFAST_CLIENT_HOLDFAST_H_
#define HOLDFAST_CLIENT_HOLDFAST_H_

#include <stddef.h>
#include <stdint.h>

/* Raised whenever this interface changes incompatibly (it is also the
 * shared library's SONAME version: libholdfast.so.1). */
#define HOLDFAST_C_API_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes; the numbering is holdfast::StatusCode's, which is gRPC's. */
typedef enum hf_code {
  HF_OK = 0,
  HF_CANCELLED = 1,
  HF_UNKNOWN = 2,
  HF_INVALID_ARGUMENT = 3,
  HF_DEADLINE_EXCEEDED = 4,
  HF_NOT_FOUND = 5,
  HF_ALREADY_EXISTS = 6,
  HF_PERMISSION_DENIED = 7,
  HF_RESOURCE_EXHAUSTED = 8,
  HF_FAILED_PRECONDITION = 9,
  HF_ABORTED = 10,
  HF_OUT_OF_RANGE = 11,
  HF_UNIMPLEMENTED = 12,
  HF_INTERNAL = 13,
  HF_UNAVAILABLE = 14,
  HF_DATA_LOSS = 15
} hf_code;

/* Element types; the numbering is holdfast::client::DType's. */
typedef enum hf_dtype {
  HF_DTYPE_BYTES = 1, /* an opaque blob: no shape (ndim 0), any size */
  HF_DTYPE_BOOL = 2,
  HF_DTYPE_UINT8 = 3,
  HF_DTYPE_INT8 = 4,
  HF_DTYPE_INT16 = 5,
  HF_DTYPE_UINT16 = 6,
  HF_DTYPE_INT32 = 7,
  HF_DTYPE_UINT32 = 8,
  HF_DTYPE_INT64 = 9,
  HF_DTYPE_UINT64 = 10,
  HF_DTYPE_FLOAT16 = 11,
  HF_DTYPE_BFLOAT16 = 12,
  HF_DTYPE_FLOAT32 = 13,
  HF_DTYPE_FLOAT64 = 14,
  HF_DTYPE_COMPLEX32 = 15,
  HF_DTYPE_COMPLEX64 = 16,
  HF_DTYPE_COMPLEX128 = 17,
  HF_DTYPE_FLOAT8_E4M3FN = 18,
  HF_DTYPE_FLOAT8_E5M2 = 19
} hf_dtype;

/* Where an item's bytes live. */
typedef enum hf_device {
  HF_DEVICE_CPU = 0,
  HF_DEVICE_CUDA = 1 /* device memory of CUDA device `device_index` */
} hf_device;

typedef struct hf_client hf_client;       /* opaque: a connection */
typedef struct hf_snapshot hf_snapshot;   /* opaque: one asynchronous snapshot */
typedef struct hf_item_list hf_item_list; /* opaque: the items of a version */

/* Connection options. Start from hf_options_init(), which sets the defaults
 * of holdfast::client::Options; hf_connect copies the strings and arrays. */
typedef struct hf_options {
  const char* endpoint;   /* default "unix:/run/holdfast/holdfastd.sock" */
  const char* job_id;     /* default "" */
  int rank;               /* default 0 */
  int world_size;         /* default 1 */
  const int* local_ranks; /* ranks of the job on this node; */
  size_t num_local_ranks; /*   0 (default) means just `rank` */
  int rpc_timeout_ms;     /* deadline of every RPC, > 0; default 60000 */
  int open_session;       /* non-zero (default): hold a session stream open so
                             the daemon cleans up at once if this process dies */
  int mapping_cache;      /* daemon segment mappings kept for reuse; default 8 */
  int copy_threads;       /* threads that copy and checksum, the caller's
                             included; 0 (default): min(hardware threads, 4) */
} hf_options;

/* One item to save. The layer copies name and shape; the `nbytes` at `data`
 * must stay valid and unchanged until the snapshot is staged. */
typedef struct hf_item {
  const char* name;     /* unique within the snapshot; not NULL */
  int dtype;            /* an hf_dtype */
  const int64_t* shape; /* ndim extents; may be NULL when ndim is 0 */
  size_t ndim;
  const void* data;
  uint64_t nbytes; /* must equal the product of shape times the dtype's size */
  int device;      /* an hf_device */
  int device_index;
} hf_item;

/* One stored item, as hf_item_list_get describes it. The pointers belong to
 * the list and stay valid until hf_item_list_free. */
typedef struct hf_item_info {
  const char* name;
  int dtype; /* an hf_dtype */
  const int64_t* shape;
  size_t ndim;
  uint64_t nbytes;
  uint64_t checksum;
} hf_item_info;

/* A caller buffer to restore one item into; nbytes must equal the item's. */
typedef struct hf_target {
  const char* name;
  void* data;
  uint64_t nbytes;
} hf_target;

/* Statistics of a committed snapshot (holdfast::client::SaveStats). */
typedef struct hf_save_stats {
  int64_t step;
  uint64_t bytes;
  int version_complete;         /* every local rank has committed the step */
  double queue_seconds;         /* waiting for earlier snapshots of this client */
  double begin_seconds;         /* reservation round trip (and mapping) */
  double copy_seconds;          /* copy + checksum into shared memory */
  double commit_seconds;        /* commit round trip */
  double daemon_verify_seconds; /* of commit_seconds, the daemon's checksum pass */
  int copy_threads;
} hf_save_stats;

/* Statistics of a restore (holdfast::client::RestoreStats). */
typedef struct hf_restore_stats {
  int64_t step; /* the step restored (useful with `latest`) */
  uint64_t bytes;
  double open_seconds; /* lease round trip (and mapping) */
  double copy_seconds; /* copy out + checksum */
} hf_restore_stats;

/* ---- library ------------------------------------------------------------- */

/* HOLDFAST_C_API_VERSION of the library itself (for dlopen users). */
int hf_api_version(void);

/* "OK", "INVALID_ARGUMENT", ...; "(invalid code)" for a value that is not an
 * hf_code. Never NULL; a static string. */
const char* hf_code_name(int code);

/* The message of this thread's last failed call, "" if that call succeeded.
 * Set by every function that returns a code (and by hf_snapshot_staged and
 * hf_snapshot_done); the others leave it alone. Valid until the next such
 * call on this thread. Never NULL. */
const char* hf_last_error(void);

/* Non-zero when this process can stage CUDA device memory (the library was
 * built with CUDA and a device is present). */
int hf_cuda_available(void);

/* ---- connecting ---------------------------------------------------------- */

/* Fills `o` with the defaults. `o` must not be NULL (NULL is ignored). */
void hf_options_init(hf_options* o);

/* Connects to holdfastd, registers the job (idempotent) and opens a session.
 * On success *out is a client to free with hf_client_free. Errors: the
 * daemon's, e.g. HF_UNAVAILABLE when nothing listens at the endpoint. */
int hf_connect(const hf_options* o, hf_client** out);

/* Finishes every snapshot already asked for (their handles stay usable and
 * report the outcome), closes the session and frees the client. */
void hf_client_free(hf_client* c);

/* ---- saving -------------------------------------------------------------- */

/* Starts saving `items` (n of them; items may be NULL when n is 0) as this
 * rank's snapshot of `step` and returns at once with *out, a handle to free
 * with hf_snapshot_free. Snapshots of one client run one at a time, in the
 * order they were asked for. A snapshot's own errors (e.g.
 * HF_FAILED_PRECONDITION for a step not newer than the latest,
 * HF_UNAVAILABLE when the daemon is gone) come from hf_snapshot_wait*; this
 * call fails only for bad arguments. */
int hf_save_async(hf_client* c, int64_t step, const hf_item* items, size_t n, hf_snapshot** out);

/* Non-blocking: 1 once staged (the library no longer reads the caller's
 * buffers; also once the snapshot failed), 0 before; -1 when s is NULL. */
int hf_snapshot_staged(const hf_snapshot* s);
/* Non-blocking: 1 once done (committed or failed), 0 before; -1 when s is
 * NULL. */
int hf_snapshot_done(const hf_snapshot* s);

/* Waits until staged: HF_OK, or the snapshot's error if it failed before or
 * while staging. timeout_ms < 0 waits for ever; otherwise
 * HF_DEADLINE_EXCEEDED when not staged within timeout_ms (0: poll), and the
 * caller's buffers are still in use. */
int hf_snapshot_wait_staged(hf_snapshot* s, int timeout_ms);

/* Waits until done: HF_OK and the statistics in *stats (stats may be NULL),
 * or the snapshot's error. timeout_ms as for hf_snapshot_wait_staged. May be
 * called again; the outcome does not change once done. */
int hf_snapshot_wait(hf_snapshot* s, int timeout_ms, hf_save_stats* stats);

/* Waits until the snapshot is staged (so the library never reads the
 * caller's buffers once the handle is gone), then frees the handle; the
 * commit finishes on its own. */
void hf_snapshot_free(hf_snapshot* s);

/* hf_save_async, then hf_snapshot_wait without a time limit. */
int hf_save(hf_client* c, int64_t step, const hf_item* items, size_t n, hf_save_stats* stats);

/* ---- querying and restoring ---------------------------------------------- */

/* The newest step every rank of the job on this node has committed: *found
 * is 1 and *step that step, or *found is 0 (and *step unchanged) when there
 * is none. */
int hf_latest_step(hf_client* c, int64_t* step, int* found);

/* The items of this rank's part of `step` (of the newest version when
 * `latest` is non-zero; then `step` is ignored), in the order they were
 * saved. *out is a list to free with hf_item_list_free. HF_NOT_FOUND when
 * there is no such complete version. */
int hf_list_items(hf_client* c, int64_t step, int latest, hf_item_list** out);

/* Number of items in the list; 0 for NULL. */
size_t hf_item_list_size(const hf_item_list* list);

/* Describes item i of the list in *out (pointers owned by the list).
 * HF_OUT_OF_RANGE when i >= hf_item_list_size(list). */
int hf_item_list_get(const hf_item_list* list, size_t i, hf_item_info* out);

void hf_item_list_free(hf_item_list* list);

/* Copies the named items of `step` (the newest when `latest` is non-zero)
 * into the caller's buffers and verifies every byte against the recorded
 * checksums. n must be at least 1 (hf_list_items tells what there is).
 * stats may be NULL. Errors: HF_NOT_FOUND (no such version or item),
 * HF_INVALID_ARGUMENT (a target's nbytes differs from the item's),
 * HF_DATA_LOSS (a checksum differs: do not use the buffers' contents). */
int hf_restore(hf_client* c, int64_t step, int latest, const hf_target* targets, size_t n,
               hf_restore_stats* stats);

/* Frees `step` of the job (every step when `all` is non-zero; then `step` is
 * ignored). */
int hf_drop(hf_client* c, int64_t step, int all);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOLDFAST_CLIENT_HOLDFAST_H_ */
