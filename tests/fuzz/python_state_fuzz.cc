// Fuzz target: the Python structure codec (client/python/holdfast/_state.py),
// run by an embedded CPython 3.11 (there is no atheris here).
//
// Input: a skeleton, the pickle that holdfast reads back from shared memory,
// given to holdfast._state.unflatten with a fixed set of tensor items
// ("t/0".."t/3"). unflatten documents pickle.UnpicklingError (a class not
// allowed, a malformed skeleton), ValueError (a missing or mismatched item),
// TypeError and RuntimeError (map_location / device placement), MemoryError
// (a counted object larger than memory: CPython allocates before reading; run
// with ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=2048,
// as run.sh does, so that such a claim fails as it would without ASan): those
// are expected. Any other exception escaping it is a finding and aborts.
//
// Coverage: libFuzzer instruments only C/C++ compiled here (this file), not
// CPython, _pickle or torch. So that it still has a signal, a C trace
// function (PyEval_SetTrace) hashes every Python line transition inside
// unflatten into libFuzzer's extra counters: line-edge coverage of the Python
// code (_state.py and the Python parts of torch it calls), nothing of the C
// code underneath (the pickle opcode loop in _pickle.c).
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#ifndef HOLDFAST_PYTHON_DIR
#error "HOLDFAST_PYTHON_DIR (client/python) must be defined"
#endif

namespace {

constexpr size_t kCounters = 1 << 16;
// libFuzzer treats this section as extra coverage counters.
__attribute__((section("__libfuzzer_extra_counters"), used)) uint8_t python_edges[kCounters];
uintptr_t previous_location = 0;

int TraceLines(PyObject*, PyFrameObject* frame, int what, PyObject*) {
  if (what != PyTrace_LINE && what != PyTrace_CALL) return 0;
  PyCodeObject* code = PyFrame_GetCode(frame);
  const auto location = reinterpret_cast<uintptr_t>(code) * 31 +
                        static_cast<uintptr_t>(PyFrame_GetLineNumber(frame)) * 2654435761u;
  Py_DECREF(code);
  const size_t edge = (location ^ (previous_location >> 1)) % kCounters;
  if (python_edges[edge] != 0xff) ++python_edges[edge];
  previous_location = location;
  return 0;
}

PyObject* unflatten = nullptr;  // holdfast._state.unflatten
PyObject* tensors = nullptr;    // item name -> tensor
PyObject* expected = nullptr;   // tuple of the documented exception types

void Die(const char* what) {
  std::fprintf(stderr, "python_state_fuzz: %s\n", what);
  if (PyErr_Occurred()) PyErr_Print();
  std::abort();
}

PyObject* Eval(const char* expression, PyObject* globals) {
  PyObject* value = PyRun_String(expression, Py_eval_input, globals, globals);
  if (value == nullptr) Die(expression);
  return value;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Py_InitializeEx(0);  // no signal handlers: libFuzzer's stay
  PyObject* main = PyImport_AddModule("__main__");
  PyObject* globals = PyModule_GetDict(main);
  PyObject* done = PyRun_String(
      "import sys\n"
      "sys.path.insert(0, '" HOLDFAST_PYTHON_DIR "')\n"
      "sys.dont_write_bytecode = True\n"
      "import collections, pickle, torch\n"
      "from holdfast import _state\n"
      "_tensors = {\n"
      "    't/0': torch.arange(4, dtype=torch.float32),\n"
      "    't/1': torch.zeros(2, 3, dtype=torch.int64),\n"
      "    't/2': torch.ones(1, dtype=torch.bfloat16),\n"
      "    't/3': torch.zeros(0, dtype=torch.uint8),\n"
      "}\n"
      "_expected = (pickle.UnpicklingError, ValueError, TypeError, RuntimeError, MemoryError)\n",
      Py_file_input, globals, globals);
  if (done == nullptr) Die("initialization");
  Py_DECREF(done);
  unflatten = Eval("_state.unflatten", globals);
  tensors = Eval("_tensors", globals);
  expected = Eval("_expected", globals);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  PyObject* skeleton = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(data),
                                                 static_cast<Py_ssize_t>(size));
  if (skeleton == nullptr) Die("bytes");
  previous_location = 0;
  PyEval_SetTrace(TraceLines, nullptr);
  PyObject* state = PyObject_CallFunctionObjArgs(unflatten, skeleton, tensors, nullptr);
  PyEval_SetTrace(nullptr, nullptr);
  Py_DECREF(skeleton);
  if (state != nullptr) {
    Py_DECREF(state);
    return 0;
  }
  PyObject* type = PyErr_Occurred();
  if (type != nullptr && PyErr_GivenExceptionMatches(type, expected)) {
    PyErr_Clear();
    return 0;
  }
  Die("unflatten raised an undocumented exception");
  return 0;
}
