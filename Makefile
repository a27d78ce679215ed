# adstream -- PGXS build.  `make test` and `make demo` are the two entry points
# documented in README.md; both install what they need (scripts/deps.sh).

EXTENSION   = adstream
EXTVERSION  = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big  = adstream
OBJS        = $(patsubst %.c,%.o,$(wildcard src/*.c))
DATA        = $(wildcard sql/$(EXTENSION)--*.sql)

PG_CONFIG  ?= pg_config
RDKAFKA_CFLAGS := $(shell pkg-config --cflags rdkafka 2>/dev/null)
RDKAFKA_LIBS   := $(shell pkg-config --libs rdkafka 2>/dev/null || echo -lrdkafka)
# Avro input (src/avro_format.c, src/schema_registry.c): Debian's libavro-dev
# and libcurl4-openssl-dev.
AVRO_CFLAGS := $(shell pkg-config --cflags avro-c 2>/dev/null)
AVRO_LIBS   := $(shell pkg-config --libs avro-c 2>/dev/null || echo -lavro)
CURL_CFLAGS := $(shell pkg-config --cflags libcurl 2>/dev/null)
CURL_LIBS   := $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)
# ADS_EXTVERSION: the workers check that the SQL objects are of this version.
PG_CPPFLAGS = -Iinclude $(RDKAFKA_CFLAGS) $(AVRO_CFLAGS) $(CURL_CFLAGS) -DADS_EXTVERSION='"$(EXTVERSION)"'
PG_CFLAGS   = -Wmissing-prototypes
SHLIB_LINK  = $(RDKAFKA_LIBS) $(AVRO_LIBS) $(CURL_LIBS) -lpthread

# make SANITIZE=1 builds adstream.so with AddressSanitizer and UBSan (see
# make asancheck); objects are rebuilt whenever SANITIZE changes.
# SANITIZE=ubsan: UBSan alone, which needs no preloaded runtime.
ifeq ($(SANITIZE),1)
PG_CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer
SHLIB_LINK += -fsanitize=address,undefined
endif
ifeq ($(SANITIZE),ubsan)
PG_CFLAGS  += -fsanitize=undefined -fno-omit-frame-pointer
SHLIB_LINK += -fsanitize=undefined
endif

# pg_regress runs on a throwaway instance with the library preloaded.
REGRESS      = api validation attribution permissions upgrade publish timezones source_counts alter status formats rewind handoff store_orders publish_record
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=test/regress.conf --load-extension=adstream

EXTRA_CLEAN  = test/bin tmp_check results regression.diffs regression.out log build-flags.stamp

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies; rebuild every object when a header
# changes.  The stamp changes when SANITIZE does, so the objects are rebuilt.
$(OBJS): $(wildcard include/*.h) build-flags.stamp
$(shell echo 'SANITIZE=$(SANITIZE)' | cmp -s - build-flags.stamp || echo 'SANITIZE=$(SANITIZE)' > build-flags.stamp)

PG_MAJOR := $(shell $(PG_CONFIG) --version | sed 's/^PostgreSQL \([0-9]*\).*/\1/')
ifneq ($(PG_MAJOR),15)
$(warning adstream is developed and tested against PostgreSQL 15; this pg_config reports $(PG_MAJOR))
endif

# ---- test tools: embedded broker, load generator, unit tests ----
# Built by the targets that use them (make tools), never by a plain make or
# make install, which build and install the extension only.
TOOLS = test/bin/adstream-mock-broker test/bin/adstream-loadgen test/bin/adstream-upsert-reader test/bin/test_event_parse \
	test/bin/test_avro_format test/bin/adstream-transcode test/bin/adstream-group-commit
TOOL_CFLAGS = -O2 -g -Wall -Wextra -Werror -Iinclude $(RDKAFKA_CFLAGS)

.PHONY: tools
tools: $(TOOLS)

test/bin:
	mkdir -p $@

test/bin/adstream-mock-broker: test/broker/mock_broker.c | test/bin
	$(CC) $(TOOL_CFLAGS) -o $@ $< $(RDKAFKA_LIBS) -lpthread

test/bin/adstream-loadgen: test/loadgen/loadgen.c | test/bin
	$(CC) $(TOOL_CFLAGS) -o $@ $< $(RDKAFKA_LIBS) -lpthread -lm

test/bin/adstream-upsert-reader: test/reader/upsert_reader.c | test/bin
	$(CC) $(TOOL_CFLAGS) -o $@ $< $(RDKAFKA_LIBS)

test/bin/adstream-group-commit: test/commit/group_commit.c | test/bin
	$(CC) $(TOOL_CFLAGS) -o $@ $< $(RDKAFKA_LIBS)

test/bin/test_event_parse: test/unit/test_event_parse.c src/event_parse.c include/event_parse.h | test/bin
	$(CC) -std=c99 $(TOOL_CFLAGS) -o $@ test/unit/test_event_parse.c src/event_parse.c

test/bin/test_avro_format: test/unit/test_avro_format.c src/avro_format.c src/event_parse.c include/avro_format.h include/event_parse.h | test/bin
	$(CC) $(TOOL_CFLAGS) $(AVRO_CFLAGS) -o $@ test/unit/test_avro_format.c src/avro_format.c src/event_parse.c $(AVRO_LIBS)

test/bin/adstream-transcode: test/formats/transcode.c src/event_parse.c include/event_parse.h | test/bin
	$(CC) $(TOOL_CFLAGS) $(AVRO_CFLAGS) -o $@ test/formats/transcode.c src/event_parse.c $(AVRO_LIBS)

# ---- entry points ----
.PHONY: deps test test-run layercheck unitcheck fuzzcheck tapcheck demo stability asancheck soak deploycheck

deps:
	scripts/deps.sh

# Full suite as CI runs it: packages, build, install, then every test as an
# unprivileged user (PostgreSQL refuses to run as root).
test:
	scripts/test.sh

# The suites themselves; expects an installed extension and a non-root user.
test-run: layercheck unitcheck fuzzcheck installcheck tapcheck

# No two files of src/ depend on each other in a circle (includes and calls).
layercheck: all
	test/layers.sh

unitcheck: test/bin/test_event_parse test/bin/test_avro_format
	test/bin/test_event_parse
	test/bin/test_avro_format

# libFuzzer on both parsers, after replaying test/fuzz/crashers (20 s each).
fuzzcheck:
	test/fuzz/run.sh 20

PG_BINDIR := $(shell $(PG_CONFIG) --bindir)
tapcheck: $(TOOLS)
	rm -rf tmp_check/t_* tmp_check/log
	PATH="$(PG_BINDIR):$$PATH" PERL5LIB="$(dir $(PGXS))../../src/test/perl:test/perl" \
	  PG_REGRESS="$(dir $(PGXS))../../src/test/regress/pg_regress" \
  ADSTREAM_BIN="$(CURDIR)/test/bin" TESTDIR="$(CURDIR)" \
	  prove -v --timer $(if $(PROVE_TESTS),$(PROVE_TESTS),test/t/*.pl)

demo:
	scripts/demo.sh

# Benchmarks (issue #6): every measurement in one run, results in bench/results/.
# BENCH_QUICK=1 for small counts; PG_CONFIG chooses the PostgreSQL.
.PHONY: bench
bench:
	bench/run.sh

# Steady realistic load for STABILITY_SECONDS against a throwaway server with
# the installed extension: worker RSS, xmin horizon, bloat, HOT updates, log
# growth, then a verdict (test/soak/stability.sh; run as a non-root user).
STABILITY_SECONDS ?= 600
stability: $(TOOLS)
	PATH="$(PG_BINDIR):$$PATH" PG_CONFIG="$(PG_CONFIG)" test/soak/stability.sh $(STABILITY_SECONDS)

# The end-to-end suites against an adstream.so built with ASan and UBSan:
#   make SANITIZE=1 PG_CONFIG=... install     (a private PostgreSQL, as its owner)
#   make PG_CONFIG=... asancheck              (as a non-root user)
# Every process of the suites runs with libasan preloaded; any ASan or UBSan
# report lands in tmp_check/asan/ and fails the target.
ASAN_LIB     := $(shell $(CC) -print-file-name=libasan.so)
ASAN_TESTS   ?= $(sort $(wildcard test/t/1*.pl))
asancheck: $(TOOLS)
	@nm -D "$(shell $(PG_CONFIG) --pkglibdir)/adstream.so" | grep -q '__asan_init\|__ubsan_handle' || \
	  { echo "asancheck: the installed adstream.so is not sanitized; run make SANITIZE=1 install first" >&2; exit 1; }
	rm -rf tmp_check/asan && mkdir -p tmp_check/asan
	LD_PRELOAD="$(if $(shell nm -D "$(shell $(PG_CONFIG) --pkglibdir)/adstream.so" | grep __asan_init),$(ASAN_LIB))" \
	  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$(CURDIR)/tmp_check/asan/asan" \
	  UBSAN_OPTIONS="print_stacktrace=1:log_path=$(CURDIR)/tmp_check/asan/ubsan" \
	  $(MAKE) --no-print-directory tapcheck PROVE_TESTS="$(ASAN_TESTS)"; rc=$$?; \
	if ls tmp_check/asan/* >/dev/null 2>&1; then \
	  echo "asancheck: sanitizer reports:"; head -n 40 tmp_check/asan/*; exit 1; fi; \
	echo "asancheck: no ASan or UBSan report"; exit $$rc

# The deployment tests (failover, several nodes, moving partitions, two
# regions) with DEPLOY_SCALE times their loads (10 by default): their longer
# variants, on demand.  As tapcheck: as an unprivileged user, after install.
deploycheck: $(TOOLS)
	ADSTREAM_TEST_SCALE=$(or $(DEPLOY_SCALE),10) $(MAKE) --no-print-directory tapcheck \
	  PROVE_TESTS="test/t/210_failover.pl test/t/215_multinode.pl test/t/235_partition_move.pl test/t/240_cross_region.pl"

# The randomized fault-injection soak, long version (test/t/170_soak.pl; a
# short one runs in make test): make soak SOAK_SECONDS=1800 SOAK_SEED=...
soak:
	scripts/soak.sh
