/* The C ABI end to end, as a trainer in another language would use it: a
 * plain C99 program linked against libholdfast.so.
 *
 *   c_api_roundtrip <socket> [roundtrip]
 *       three steps (synchronous and asynchronous saves, items of several
 *       dtypes and shapes, a 0-byte and a > 8 MiB item), latest step, item
 *       lists, full and partial restores compared byte for byte, error paths,
 *       drop.
 *   c_api_roundtrip <socket> daemon-gone <go-file>
 *       saves step 1, prints "ready", waits until <go-file> exists (the
 *       caller kills the daemon first), then expects saves to fail with
 *       HF_UNAVAILABLE and a message.
 *
 * Prints "ok" and exits 0 on success; otherwise prints what failed and exits
 * 1. Run by c_api_test.cc against a real holdfastd.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep */

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "holdfast/client/holdfast.h"

/* ---- reporting ------------------------------------------------------------ */

static void Fail(const char* format, ...) {
  va_list args;
  va_start(args, format);
  printf("FAIL: ");
  vprintf(format, args);
  printf("\n");
  va_end(args);
  fflush(stdout);
  exit(1);
}

/* Fails unless `rc` is `want`; a failed call must leave a message, a
 * successful one an empty message. */
static void ExpectCode(int rc, int want, const char* what) {
  const char* message = hf_last_error();
  if (rc != want) {
    Fail("%s: got %s (\"%s\"), want %s", what, hf_code_name(rc), message, hf_code_name(want));
  }
  if (rc == HF_OK && message[0] != '\0') Fail("%s: OK but hf_last_error is \"%s\"", what, message);
  if (rc != HF_OK && message[0] == '\0')
    Fail("%s: %s with an empty hf_last_error", what, hf_code_name(rc));
}

static void ExpectOk(int rc, const char* what) { ExpectCode(rc, HF_OK, what); }

static void Expect(int condition, const char* what) {
  if (!condition) Fail("%s", what);
}

/* ---- the items of a step -------------------------------------------------- */

#define NUM_ITEMS 6
#define BIG_BYTES ((uint64_t)9 * 1024 * 1024 + 13) /* > 8 MiB, odd */

typedef struct {
  const char* name;
  int dtype;
  int64_t shape[3];
  size_t ndim;
  uint64_t nbytes;
} ItemSpec;

static const ItemSpec kSpecs[NUM_ITEMS] = {
    {"layer.weight", HF_DTYPE_FLOAT32, {3, 5, 7}, 3, 3 * 5 * 7 * 4},
    {"layer.bias", HF_DTYPE_FLOAT64, {17, 0, 0}, 1, 17 * 8},
    {"empty", HF_DTYPE_FLOAT32, {0, 4, 0}, 2, 0},
    {"embedding", HF_DTYPE_UINT8, {(int64_t)BIG_BYTES, 0, 0}, 1, BIG_BYTES},
    {"rng_state", HF_DTYPE_BYTES, {0, 0, 0}, 0, 1001},
    {"counters", HF_DTYPE_INT64, {2, 3, 0}, 2, 2 * 3 * 8},
};

/* Deterministic bytes of item i at `step` (xorshift64). */
static void Fill(unsigned char* p, uint64_t n, int64_t step, int i) {
  uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(step * 31 + i + 1);
  uint64_t k;
  for (k = 0; k < n; ++k) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[k] = (unsigned char)(x >> 56);
  }
}

/* Buffers of one step; buffer of the 0-byte item stays NULL. */
typedef struct {
  unsigned char* data[NUM_ITEMS];
  hf_item items[NUM_ITEMS];
} State;

static void StateInit(State* s, int64_t step) {
  int i;
  for (i = 0; i < NUM_ITEMS; ++i) {
    const ItemSpec* spec = &kSpecs[i];
    s->data[i] = NULL;
    if (spec->nbytes > 0) {
      s->data[i] = (unsigned char*)malloc((size_t)spec->nbytes);
      if (s->data[i] == NULL) Fail("out of memory");
      Fill(s->data[i], spec->nbytes, step, i);
    }
    s->items[i].name = spec->name;
    s->items[i].dtype = spec->dtype;
    s->items[i].shape = spec->ndim > 0 ? spec->shape : NULL;
    s->items[i].ndim = spec->ndim;
    s->items[i].data = s->data[i];
    s->items[i].nbytes = spec->nbytes;
    s->items[i].device = HF_DEVICE_CPU;
    s->items[i].device_index = 0;
  }
}

/* What a training step does to the tensors once a snapshot is staged. */
static void StateScribble(State* s) {
  int i;
  for (i = 0; i < NUM_ITEMS; ++i) {
    if (s->data[i] != NULL) memset(s->data[i], 0xEE, (size_t)kSpecs[i].nbytes);
  }
}

static void StateFree(State* s) {
  int i;
  for (i = 0; i < NUM_ITEMS; ++i) free(s->data[i]);
}

static uint64_t TotalBytes(void) {
  uint64_t total = 0;
  int i;
  for (i = 0; i < NUM_ITEMS; ++i) total += kSpecs[i].nbytes;
  return total;
}

static int SpecIndex(const char* name) {
  int i;
  for (i = 0; i < NUM_ITEMS; ++i) {
    if (strcmp(kSpecs[i].name, name) == 0) return i;
  }
  Fail("no item named '%s'", name);
  return -1;
}

/* Restores the named items of `step` (or the newest) into fresh buffers and
 * compares them with what `want_step` saved. */
static void ExpectRestores(hf_client* c, int64_t step, int latest, const char* const* names,
                           size_t n, int64_t want_step) {
  hf_target targets[NUM_ITEMS];
  unsigned char* want = NULL;
  hf_restore_stats stats;
  uint64_t want_bytes = 0;
  size_t k;
  if (n > NUM_ITEMS) Fail("too many targets");
  for (k = 0; k < n; ++k) {
    const ItemSpec* spec = &kSpecs[SpecIndex(names[k])];
    targets[k].name = names[k];
    targets[k].nbytes = spec->nbytes;
    targets[k].data = NULL; /* a 0-byte item needs no buffer */
    if (spec->nbytes > 0) {
      targets[k].data = malloc((size_t)spec->nbytes);
      if (targets[k].data == NULL) Fail("out of memory");
      memset(targets[k].data, 0x55, (size_t)spec->nbytes);
    }
    want_bytes += spec->nbytes;
  }
  memset(&stats, 0, sizeof stats);
  ExpectOk(hf_restore(c, step, latest, targets, n, &stats), "restore");
  if (stats.step != want_step) {
    Fail("restored step %lld, want %lld", (long long)stats.step, (long long)want_step);
  }
  if (stats.bytes != want_bytes) {
    Fail("restored %llu bytes, want %llu", (unsigned long long)stats.bytes,
         (unsigned long long)want_bytes);
  }
  for (k = 0; k < n; ++k) {
    const int i = SpecIndex(names[k]);
    if (kSpecs[i].nbytes == 0) continue;
    want = (unsigned char*)malloc((size_t)kSpecs[i].nbytes);
    if (want == NULL) Fail("out of memory");
    Fill(want, kSpecs[i].nbytes, want_step, i);
    if (memcmp(want, targets[k].data, (size_t)kSpecs[i].nbytes) != 0) {
      Fail("item '%s' of step %lld differs after restore", names[k], (long long)want_step);
    }
    free(want);
    free(targets[k].data);
  }
}

static void ExpectLatest(hf_client* c, int want_found, int64_t want_step) {
  int64_t step = -12345;
  int found = -1;
  ExpectOk(hf_latest_step(c, &step, &found), "latest step");
  if (found != want_found || (found && step != want_step)) {
    Fail("latest step: found %d step %lld, want found %d step %lld", found, (long long)step,
         want_found, (long long)want_step);
  }
  if (!found && step != -12345) Fail("latest step: *step written although nothing was found");
}

static void ExpectItemList(hf_client* c, int64_t step, int latest) {
  hf_item_list* list = NULL;
  hf_item_info info;
  size_t i, d;
  ExpectOk(hf_list_items(c, step, latest, &list), "list items");
  if (hf_item_list_size(list) != NUM_ITEMS) {
    Fail("list has %zu items, want %d", hf_item_list_size(list), NUM_ITEMS);
  }
  for (i = 0; i < NUM_ITEMS; ++i) {
    const ItemSpec* spec = &kSpecs[i];
    ExpectOk(hf_item_list_get(list, i, &info), "item list get");
    if (strcmp(info.name, spec->name) != 0)
      Fail("item %zu is '%s', want '%s'", i, info.name, spec->name);
    if (info.dtype != spec->dtype)
      Fail("item '%s': dtype %d, want %d", spec->name, info.dtype, spec->dtype);
    if (info.nbytes != spec->nbytes) Fail("item '%s': wrong nbytes", spec->name);
    if (info.ndim != spec->ndim)
      Fail("item '%s': ndim %zu, want %zu", spec->name, info.ndim, spec->ndim);
    if (info.ndim == 0 && info.shape != NULL)
      Fail("item '%s': shape not NULL for ndim 0", spec->name);
    for (d = 0; d < info.ndim; ++d) {
      if (info.shape[d] != spec->shape[d]) Fail("item '%s': extent %zu differs", spec->name, d);
    }
  }
  ExpectCode(hf_item_list_get(list, NUM_ITEMS, &info), HF_OUT_OF_RANGE,
             "item list get past the end");
  ExpectCode(hf_item_list_get(list, 0, NULL), HF_INVALID_ARGUMENT, "item list get into NULL");
  hf_item_list_free(list);
}

/* ---- modes ---------------------------------------------------------------- */

static hf_client* Connect(const char* socket_path) {
  char endpoint[4096];
  hf_options options;
  hf_client* c = NULL;
  if (strlen(socket_path) + 6 > sizeof endpoint) Fail("socket path too long");
  sprintf(endpoint, "unix:%s", socket_path);
  hf_options_init(&options);
  options.endpoint = endpoint;
  options.job_id = "c-api";
  options.rpc_timeout_ms = 20000;
  ExpectOk(hf_connect(&options, &c), "connect");
  Expect(c != NULL, "connect: no client");
  return c;
}

static void ArgumentErrors(hf_client* c, State* s) {
  hf_options options;
  hf_client* no_client = NULL;
  hf_snapshot* h = NULL;
  hf_item bad[2];
  hf_target target;
  int64_t step;
  int found;

  ExpectCode(hf_connect(NULL, &no_client), HF_INVALID_ARGUMENT, "connect with NULL options");
  hf_options_init(&options);
  options.job_id = NULL;
  ExpectCode(hf_connect(&options, &no_client), HF_INVALID_ARGUMENT, "connect with NULL job_id");
  Expect(strstr(hf_last_error(), "job_id") != NULL, "the message names job_id");
  Expect(no_client == NULL, "a failed connect wrote its output");

  ExpectCode(hf_save_async(c, 10, NULL, 2, &h), HF_INVALID_ARGUMENT, "save with NULL items");
  Expect(strstr(hf_last_error(), "items") != NULL, "the message names items");
  memcpy(bad, s->items, sizeof bad);
  bad[1].name = NULL;
  ExpectCode(hf_save_async(c, 10, bad, 2, &h), HF_INVALID_ARGUMENT, "save with a NULL name");
  Expect(strstr(hf_last_error(), "items[1].name") != NULL, "the message names items[1].name");
  memcpy(bad, s->items, sizeof bad);
  bad[0].shape = NULL;
  ExpectCode(hf_save(c, 10, bad, 2, NULL), HF_INVALID_ARGUMENT, "save with a NULL shape");
  Expect(strstr(hf_last_error(), "items[0].shape") != NULL, "the message names items[0].shape");
  ExpectCode(hf_save_async(c, 10, s->items, NUM_ITEMS, NULL), HF_INVALID_ARGUMENT,
             "save into a NULL handle");
  ExpectCode(hf_save_async(NULL, 10, s->items, NUM_ITEMS, &h), HF_INVALID_ARGUMENT,
             "save on a NULL client");
  Expect(h == NULL, "a failed save_async wrote its output");

  ExpectCode(hf_restore(c, 0, 1, NULL, 1, NULL), HF_INVALID_ARGUMENT, "restore NULL targets");
  target.name = NULL;
  target.data = NULL;
  target.nbytes = 0;
  ExpectCode(hf_restore(c, 0, 1, &target, 1, NULL), HF_INVALID_ARGUMENT, "restore a NULL name");
  ExpectCode(hf_latest_step(c, NULL, &found), HF_INVALID_ARGUMENT, "latest step into NULL");
  ExpectCode(hf_latest_step(c, &step, NULL), HF_INVALID_ARGUMENT, "latest found into NULL");
  ExpectCode(hf_list_items(c, 0, 1, NULL), HF_INVALID_ARGUMENT, "list items into NULL");
  ExpectCode(hf_drop(NULL, 0, 1), HF_INVALID_ARGUMENT, "drop on a NULL client");
  Expect(hf_snapshot_staged(NULL) == -1, "staged(NULL) is -1");
  Expect(hf_snapshot_done(NULL) == -1, "done(NULL) is -1");
  ExpectCode(hf_snapshot_wait(NULL, -1, NULL), HF_INVALID_ARGUMENT, "wait on NULL");

  hf_snapshot_free(NULL);
  hf_item_list_free(NULL);
  hf_client_free(NULL);
}

static void RoundTrip(const char* socket_path) {
  static const char* const kAll[NUM_ITEMS] = {"layer.weight", "layer.bias", "empty",
                                              "embedding",    "rng_state",  "counters"};
  static const char* const kSubset[3] = {"counters", "embedding", "empty"};
  hf_client* c = Connect(socket_path);
  State s1, s2, s3;
  hf_snapshot* h2 = NULL;
  hf_snapshot* h3 = NULL;
  hf_snapshot* stale = NULL;
  hf_save_stats stats;
  hf_target wrong;
  unsigned char small[16];
  int rc;

  Expect(hf_api_version() == HOLDFAST_C_API_VERSION, "hf_api_version");
  ExpectOk(hf_drop(c, 0, 1), "drop everything first");
  ExpectLatest(c, 0, 0);

  /* Step 1, synchronously. */
  StateInit(&s1, 1);
  memset(&stats, 0, sizeof stats);
  ExpectOk(hf_save(c, 1, s1.items, NUM_ITEMS, &stats), "save step 1");
  Expect(stats.step == 1, "stats of step 1: step");
  Expect(stats.bytes == TotalBytes(), "stats of step 1: bytes");
  Expect(stats.version_complete == 1, "stats of step 1: version complete");
  Expect(stats.copy_threads >= 1, "stats of step 1: copy threads");
  ExpectLatest(c, 1, 1);

  /* Steps 2 and 3 queued back to back; the buffers change once staged. */
  StateInit(&s2, 2);
  StateInit(&s3, 3);
  ExpectOk(hf_save_async(c, 2, s2.items, NUM_ITEMS, &h2), "save_async step 2");
  ExpectOk(hf_save_async(c, 3, s3.items, NUM_ITEMS, &h3), "save_async step 3");
  ExpectOk(hf_snapshot_wait_staged(h2, -1), "wait staged step 2");
  Expect(hf_snapshot_staged(h2) == 1, "step 2 staged");
  StateScribble(&s2);
  memset(&stats, 0, sizeof stats);
  ExpectOk(hf_snapshot_wait(h2, 60000, &stats), "wait step 2");
  Expect(hf_snapshot_done(h2) == 1, "step 2 done");
  Expect(stats.step == 2 && stats.bytes == TotalBytes(), "stats of step 2");
  /* A poll: either still running or committed. */
  rc = hf_snapshot_wait(h3, 0, NULL);
  if (rc != HF_OK && rc != HF_DEADLINE_EXCEEDED) ExpectOk(rc, "poll step 3");
  ExpectOk(hf_snapshot_wait_staged(h3, 60000), "wait staged step 3");
  StateScribble(&s3);
  ExpectOk(hf_snapshot_wait(h3, -1, &stats), "wait step 3");
  Expect(stats.step == 3, "stats of step 3");
  ExpectOk(hf_snapshot_wait(h3, 0, NULL), "wait step 3 again");
  hf_snapshot_free(h2);
  hf_snapshot_free(h3);
  ExpectLatest(c, 1, 3);

  /* What is stored, and restores byte for byte. */
  ExpectItemList(c, 0, 1);
  ExpectItemList(c, 2, 0);
  ExpectRestores(c, 0, 1, kAll, NUM_ITEMS, 3);
  ExpectRestores(c, 2, 0, kSubset, 3, 2);

  /* Restore errors. */
  wrong.name = "layer.bias";
  wrong.data = small;
  wrong.nbytes = sizeof small;
  ExpectCode(hf_restore(c, 3, 0, &wrong, 1, NULL), HF_INVALID_ARGUMENT,
             "restore into a short buffer");
  Expect(strstr(hf_last_error(), "layer.bias") != NULL, "the message names the item");
  ExpectLatest(c, 1, 3); /* success clears the message (checked inside) */
  wrong.name = "no.such.item";
  ExpectCode(hf_restore(c, 3, 0, &wrong, 1, NULL), HF_NOT_FOUND, "restore an unknown item");
  wrong.name = "layer.bias";
  ExpectCode(hf_restore(c, 99, 0, &wrong, 1, NULL), HF_NOT_FOUND, "restore an unknown step");
  ExpectCode(hf_restore(c, 3, 0, &wrong, 0, NULL), HF_INVALID_ARGUMENT, "restore no targets");

  /* A step not newer than the latest fails on its handle. */
  StateFree(&s1);
  StateInit(&s1, 3);
  ExpectOk(hf_save_async(c, 3, s1.items, NUM_ITEMS, &stale), "save_async stale step 3");
  ExpectCode(hf_snapshot_wait(stale, -1, &stats), HF_FAILED_PRECONDITION, "wait on a stale step");
  Expect(hf_snapshot_staged(stale) == 1 && hf_snapshot_done(stale) == 1,
         "stale step: staged, done");
  hf_snapshot_free(stale);

  ArgumentErrors(c, &s1);

  /* Drop one step, then all. */
  ExpectOk(hf_drop(c, 3, 0), "drop step 3");
  ExpectLatest(c, 1, 2);
  ExpectRestores(c, 0, 1, kAll, NUM_ITEMS, 2);
  ExpectOk(hf_drop(c, 0, 1), "drop all");
  ExpectLatest(c, 0, 0);
  wrong.nbytes = kSpecs[1].nbytes;
  ExpectCode(hf_restore(c, 0, 1, &wrong, 1, NULL), HF_NOT_FOUND, "restore after drop");

  StateFree(&s1);
  StateFree(&s2);
  StateFree(&s3);
  hf_client_free(c);
}

static void DaemonGone(const char* socket_path, const char* go_file) {
  const struct timespec tick = {0, 10 * 1000 * 1000};
  hf_client* c = Connect(socket_path);
  hf_snapshot* h = NULL;
  State s;
  FILE* go = NULL;
  int waited_ms = 0;
  int64_t step;
  int found;

  StateInit(&s, 1);
  ExpectOk(hf_drop(c, 0, 1), "drop everything first");
  ExpectOk(hf_save(c, 1, s.items, NUM_ITEMS, NULL), "save step 1");
  printf("ready\n");
  fflush(stdout);
  while ((go = fopen(go_file, "r")) == NULL) {
    if (waited_ms >= 120000) Fail("no %s after 120 s", go_file);
    nanosleep(&tick, NULL);
    waited_ms += 10;
  }
  fclose(go);

  ExpectOk(hf_save_async(c, 2, s.items, NUM_ITEMS, &h), "save_async step 2 (the call itself)");
  ExpectCode(hf_snapshot_wait(h, 60000, NULL), HF_UNAVAILABLE, "save of step 2 without a daemon");
  Expect(strstr(hf_last_error(), "step 2") != NULL, "the message names step 2");
  printf("step 2: %s: %s\n", hf_code_name(HF_UNAVAILABLE), hf_last_error());
  Expect(hf_snapshot_staged(h) == 1, "the failed snapshot is staged");
  hf_snapshot_free(h);
  ExpectCode(hf_save(c, 3, s.items, NUM_ITEMS, NULL), HF_UNAVAILABLE,
             "save of step 3 without a daemon");
  Expect(hf_latest_step(c, &step, &found) != HF_OK, "latest step without a daemon fails");
  Expect(hf_last_error()[0] != '\0', "latest step without a daemon: a message");
  StateFree(&s);
  hf_client_free(c);
}

int main(int argc, char** argv) {
  const char* mode = argc > 2 ? argv[2] : "roundtrip";
  if (argc < 2) {
    fprintf(stderr, "usage: %s <socket> [roundtrip | daemon-gone <go-file>]\n", argv[0]);
    return 2;
  }
  if (strcmp(mode, "roundtrip") == 0) {
    RoundTrip(argv[1]);
  } else if (strcmp(mode, "daemon-gone") == 0 && argc > 3) {
    DaemonGone(argv[1], argv[3]);
  } else {
    fprintf(stderr, "unknown mode '%s'\n", mode);
    return 2;
  }
  printf("ok\n");
  return 0;
}
