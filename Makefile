# Makefile - builds libpicklepool (.so and .a), the picklepool CLI, the plugins,
# the tests, the benchmarks and the fuzz targets.  Everything lands in build/
# (build/<sanitizer>/ for sanitizer builds), which is ignored by git.
#
#   make                      library, CLI, plugins, tests and benches (built, not run)
#   make test                 install missing Debian packages, build, run every test
#   make demo                 the main job (see README)
#   make SANITIZER=address    (or undefined, thread) build into build/address and test
#   make fuzz                 libFuzzer targets with clang into build/fuzz
#   make install PREFIX=/usr/local   (make uninstall PREFIX=... removes it)
#
# Source files are found by wildcard: runtime/<layer>/*.c is the library (its
# layers core <- codec <- ipc <- proc <- pool, checked by scripts/check_layers.py),
# cli/*.c the picklepool command, workers/*.c the standalone worker,
# plugins/*.c one .so each, tests/test_*.c one test each, bench/*.c one
# benchmark each.

PREFIX   ?= /usr/local
PYTHON   ?= /usr/bin/python3
# Where `make install` puts the Python package: the site directory of
# $(PYTHON) under $(PREFIX) (Debian's python3 reads
# /usr/local/lib/python3.X/dist-packages).
PYDIR    ?= $(shell $(PYTHON) -c 'import sys; print("$(PREFIX)/lib/python%d.%d/dist-packages" % sys.version_info[:2])' 2>/dev/null)
NM       ?= nm
SANITIZER ?=

# The version is written once, in include/picklepool/version.h; the soname
# follows its major number (the ABI), the installed file names all of it.
VERSION_H := include/picklepool/version.h
version_part = $(shell awk '/^.define/ && $$2 == "PK_VERSION_$(1)" { print $$3 }' $(VERSION_H))
VERSION_MAJOR := $(call version_part,MAJOR)
VERSION_MINOR := $(call version_part,MINOR)
VERSION_PATCH := $(call version_part,PATCH)
VERSION  := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)
ifneq ($(shell echo '$(VERSION)' | grep -Ex '[0-9]+\.[0-9]+\.[0-9]+'),$(VERSION))
$(error cannot read PK_VERSION_MAJOR/MINOR/PATCH from $(VERSION_H): got "$(VERSION)")
endif
SONAME   := libpicklepool.so.$(VERSION_MAJOR)

ifeq ($(SANITIZER),)
BUILD    ?= build
OPT      ?= -O2
else
BUILD    ?= build/$(SANITIZER)
OPT      ?= -O1 -fno-omit-frame-pointer
SANFLAGS := -fsanitize=$(SANITIZER) -fno-sanitize-recover=all
.DEFAULT_GOAL := test
endif

PKG_CFLAGS := $(shell pkg-config --cflags libzmq hwloc 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs libzmq hwloc 2>/dev/null)

WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS  ?= $(OPT) -g
ALL_CFLAGS := -std=gnu11 $(CFLAGS) $(WARN) $(SANFLAGS) -fPIC -pthread \
              -Iinclude -Iruntime $(PKG_CFLAGS)
LDLIBS_LIB := $(PKG_LIBS) -ldl -lm -pthread
ALL_LDFLAGS := $(LDFLAGS) $(SANFLAGS) -pthread

LAYERS      := core codec ipc proc pool
RUNTIME_SRC := $(foreach l,$(LAYERS),$(wildcard runtime/$(l)/*.c))
CLI_SRC     := $(wildcard cli/*.c)
WORKER_SRC  := $(wildcard workers/*.c)
PLUGIN_SRC  := $(wildcard plugins/*.c)
TEST_SRC    := $(wildcard tests/test_*.c)
TESTLIB_SRC := $(wildcard tests/lib/*.c)
BENCH_SRC   := $(wildcard bench/*.c)
FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c)

LIB_OBJ    := $(RUNTIME_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ    := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
WORKER_OBJ := $(WORKER_SRC:%.c=$(BUILD)/obj/%.o)
TESTLIB_OBJ := $(TESTLIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB_A      := $(BUILD)/libpicklepool.a
LIB_SO     := $(BUILD)/libpicklepool.so
# Executables carry the whole library and export it (-rdynamic) so that plugins,
# which are built without linking libpicklepool, resolve its symbols there.
WHOLE_LIB  := -Wl,--whole-archive $(LIB_A) -Wl,--no-whole-archive
CLI        := $(BUILD)/picklepool
# The standalone worker links the layers below pool and nothing else, whole
# and exported like the library above: a reference from it (or from those
# layers) to the pool layer fails its link.
WORKER_LIB := $(BUILD)/obj/libpicklepool-nopool.a
WORKER_LAYERS := core codec ipc proc
WORKER_LIB_OBJ := $(foreach l,$(WORKER_LAYERS),$(filter $(BUILD)/obj/runtime/$(l)/%,$(LIB_OBJ)))
WORKER     := $(BUILD)/picklepool-worker
PLUGINS    := $(PLUGIN_SRC:plugins/%.c=$(BUILD)/plugins/%.so)
TESTS      := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# Tests linked with -lpicklepool instead of the archive: they check the .so as
# programs using it see it (soname, exports, plugins).
SHARED_TESTS := $(BUILD)/tests/test_version
BENCHES    := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
REPLAYS    := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/tests/%_replay)

.PHONY: all deps deps-test test test-c test-py check-exports check-format demo fuzz install uninstall ldconfig-note clean format
all: $(LIB_A) $(LIB_SO) $(CLI) $(WORKER) $(PLUGINS) $(TESTS) $(BENCHES) $(REPLAYS)

deps:
	@sh scripts/deps.sh

# make test also installs what only the tests use (Slurm, munge, Open MPI,
# iproute2 for tests/python/clusterlib.py's multi-host harnesses).
deps-test:
	@sh scripts/deps.sh --test

# The library exports only the functions its public headers mark PK_API
# (include/picklepool/export.h); every other symbol of it is hidden, in the
# .so and in executables that export the .a with -rdynamic alike.  The CLI's
# pk__ functions, which those executables link too, are hidden the same way,
# so plugins see the public API and nothing else.
$(LIB_OBJ) $(CLI_OBJ): ALL_CFLAGS += -fvisibility=hidden

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(LIB_A): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Beside it the soname link that programs linked with -lpicklepool load.
$(LIB_SO): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS_LIB)
	ln -sf $(notdir $@) $(dir $@)$(SONAME)

$(CLI): $(CLI_OBJ) $(LIB_A)
	$(CC) $(ALL_LDFLAGS) -rdynamic -o $@ $(CLI_OBJ) $(WHOLE_LIB) $(LDLIBS_LIB) -lz -lbz2 -llzma

$(WORKER_LIB): $(WORKER_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(WORKER): $(WORKER_OBJ) $(WORKER_LIB)
	$(CC) $(ALL_LDFLAGS) -rdynamic -o $@ $(WORKER_OBJ) \
	    -Wl,--whole-archive $(WORKER_LIB) -Wl,--no-whole-archive $(LDLIBS_LIB)

$(BUILD)/plugins/%.so: plugins/%.c $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -shared $(ALL_LDFLAGS) -o $@ $<

$(BUILD)/tests/%: tests/%.c $(TESTLIB_OBJ) $(LIB_A) $(CLI_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I. -Itests $(ALL_LDFLAGS) -rdynamic -o $@ $< $(TESTLIB_OBJ) \
	    $(filter-out $(BUILD)/obj/cli/main.o,$(CLI_OBJ)) $(WHOLE_LIB) \
	    $(LDLIBS_LIB) -lcmocka -lz -lbz2 -llzma

# test_worker_exe runs the worker binary with the examples plugin.
$(BUILD)/tests/test_worker_exe: $(WORKER) $(PLUGINS)

$(SHARED_TESTS): $(BUILD)/tests/%: tests/%.c $(LIB_SO)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< -L$(BUILD) -lpicklepool \
	    -Wl,-rpath,'$$ORIGIN/..' -lcmocka -ldl

$(BUILD)/tests/%_replay: tests/fuzz/%.c tests/fuzz/replay_main.c $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< tests/fuzz/replay_main.c $(LIB_A) $(LDLIBS_LIB)

$(BUILD)/bench/%: bench/%.c $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -rdynamic -o $@ $< $(WHOLE_LIB) $(LDLIBS_LIB)

# Tests: every C test under a hard timeout (each also guards itself), the fuzz
# corpora replayed, then the Python suite against this build.
test: deps-test
	@$(MAKE) --no-print-directory all
	@rm -f $(BUILD)/test-c.summary $(BUILD)/test-py.log
	@$(MAKE) --no-print-directory test-c; c=$$?; \
	    $(MAKE) --no-print-directory test-py; p=$$?; \
	    echo "== totals"; \
	    cat $(BUILD)/test-c.summary 2>/dev/null || echo "c-tests: did not finish"; \
	    echo "python-tests: $$(grep -E '(passed|failed|error)' $(BUILD)/test-py.log 2>/dev/null | tail -1 || echo 'did not finish')"; \
	    [ $$c = 0 ] && [ $$p = 0 ] && echo "make test: everything passed" || \
	    { echo "make test: FAILED"; false; }

# The library, the plugins and every executable that loads plugins export
# exactly the public API (scripts/check_exports.py says what it checks).
check-exports: $(LIB_SO) $(PLUGINS) $(CLI) $(TESTS) $(BENCHES)
	@$(PYTHON) scripts/check_exports.py --cc '$(CC)' --nm '$(NM)' --lib $(LIB_SO) \
	    --plugins $(PLUGINS) \
	    --hosts $(CLI) $(filter-out $(SHARED_TESTS),$(TESTS)) $(BENCHES)

# Each C test program (and each fuzz corpus replay) counts as one test in the
# closing line; the programs print their own cmocka detail above it.
test-c: all check-exports check-format
	@$(PYTHON) scripts/check_layers.py
	@pass=0; fail=0; failed=""; for t in $(TESTS); do \
	    echo "== $$t"; \
	    if PICKLEPOOL_BUILD=$(BUILD) timeout 600 $$t; then pass=$$((pass+1)); \
	    else fail=$$((fail+1)); failed="$$failed $$t"; fi; \
	done; \
	for r in $(REPLAYS); do \
	    n=$$(basename $$r _replay); echo "== $$r tests/fuzz/corpus/$${n#fuzz_}"; \
	    if timeout 600 $$r tests/fuzz/corpus/$${n#fuzz_}; then pass=$$((pass+1)); \
	    else fail=$$((fail+1)); failed="$$failed $$r"; fi; \
	done; \
	[ -z "$$failed" ] || echo "failed:$$failed"; \
	echo "c-tests: $$pass passed, $$fail failed$${failed:+ (failed:$$failed)}" | \
	    tee $(BUILD)/test-c.summary; [ $$fail = 0 ]

# TSan: libzmq (not instrumented) hands buffers between threads in ways TSan
# cannot see; tests/tsan.supp drops reports inside it so ours stand out.
ifeq ($(SANITIZER),thread)
export TSAN_OPTIONS := suppressions=$(abspath tests/tsan.supp) second_deadlock_stack=1 $(TSAN_OPTIONS)
endif

# An ASan-built libpicklepool.so loaded by ctypes into a plain python needs the
# ASan runtime preloaded; leak checking is left to the C tests there.
ifeq ($(SANITIZER),address)
PY_ENV := LD_PRELOAD=$$($(CC) -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0
endif

test-py: all
	@if ls tests/python/test_*.py >/dev/null 2>&1; then \
	    { PICKLEPOOL_BUILD=$(abspath $(BUILD)) PICKLEPOOL_SANITIZER=$(SANITIZER) \
	      PYTHON=$(PYTHON) $(PY_ENV) \
	      timeout 900 $(PYTHON) -m pytest -q -p no:cacheprovider tests/python; \
	      echo $$? > $(BUILD)/test-py.rc; } | tee $(BUILD)/test-py.log; \
	    exit $$(cat $(BUILD)/test-py.rc); \
	fi

demo: deps
	@$(MAKE) --no-print-directory $(CLI) $(PLUGINS)
	$(CLI) demo

fuzz:
	@sh scripts/deps.sh --extra
	@mkdir -p build/fuzz
	for f in $(FUZZ_SRC); do \
	    clang -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Iruntime \
	        $(PKG_CFLAGS) -o build/fuzz/$$(basename $$f .c) $$f $(RUNTIME_SRC) $(LDLIBS_LIB) || exit 1; \
	done
	@echo "fuzzers in build/fuzz; run e.g. build/fuzz/fuzz_unpickle tests/fuzz/corpus/unpickle"

install: $(LIB_A) $(LIB_SO) $(CLI) $(WORKER) $(PLUGINS)
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/picklepool \
	    $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/picklepool/plugins
	install -m 644 $(LIB_A) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIB_SO) $(DESTDIR)$(PREFIX)/lib/libpicklepool.so.$(VERSION)
	ln -sf libpicklepool.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libpicklepool.so
	install -m 644 include/picklepool.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 include/picklepool/*.h $(DESTDIR)$(PREFIX)/include/picklepool/
	install -m 755 $(CLI) $(WORKER) $(DESTDIR)$(PREFIX)/bin/
	for p in $(PLUGINS); do install -m 755 $$p $(DESTDIR)$(PREFIX)/lib/picklepool/plugins/; done
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' picklepool.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/picklepool.pc
	install -d $(DESTDIR)$(PYDIR)/picklepool
	install -m 644 python/picklepool/*.py $(DESTDIR)$(PYDIR)/picklepool/
	@$(MAKE) --no-print-directory ldconfig-note

# The dynamic loader finds a new library only after ldconfig has updated its
# cache: run it when installing as root for real (not into a DESTDIR), and
# say what to run when that did not make the library findable (not root, or
# a prefix the loader does not search).
ldconfig-note:
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig; fi; \
	if [ -n "$(DESTDIR)" ] || ! /sbin/ldconfig -p 2>/dev/null | \
	        grep -qF '$(PREFIX)/lib/$(SONAME)'; then \
	    echo "install: the loader does not know $(PREFIX)/lib yet; run"; \
	    echo "    sudo ldconfig            (when $(PREFIX)/lib is in /etc/ld.so.conf.d)"; \
	    echo "    or export LD_LIBRARY_PATH=$(PREFIX)/lib, or link with -Wl,-rpath,$(PREFIX)/lib"; \
	else echo "install: ran ldconfig: $(SONAME) is in the loader's cache"; fi

# Removes what install put there (nothing else).
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/libpicklepool.a \
	    $(DESTDIR)$(PREFIX)/lib/libpicklepool.so.$(VERSION) \
	    $(DESTDIR)$(PREFIX)/lib/$(SONAME) $(DESTDIR)$(PREFIX)/lib/libpicklepool.so \
	    $(DESTDIR)$(PREFIX)/include/picklepool.h \
	    $(DESTDIR)$(PREFIX)/lib/pkgconfig/picklepool.pc \
	    $(DESTDIR)$(PREFIX)/bin/$(notdir $(CLI)) $(DESTDIR)$(PREFIX)/bin/$(notdir $(WORKER))
	rm -rf $(DESTDIR)$(PREFIX)/include/picklepool $(DESTDIR)$(PREFIX)/lib/picklepool \
	    $(DESTDIR)$(PYDIR)/picklepool

# The C sources clang-format owns (.clang-format at the root); the generated
# compat_names.h stays as its generator writes it.
FORMAT_SRC = $(filter-out runtime/codec/compat_names.h,$(wildcard \
    include/*.h include/picklepool/*.h runtime/*/*.[ch] cli/*.[ch] \
    workers/*.[ch] plugins/*.c tests/*.c tests/lib/*.[ch] tests/fuzz/*.c \
    bench/*.c))

format:
	clang-format -i $(FORMAT_SRC)

# Run by make test: any file clang-format would change fails it.
check-format:
	@clang-format --dry-run -Werror $(FORMAT_SRC) && \
	    echo "check-format: $(words $(FORMAT_SRC)) files formatted as .clang-format says"

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
