# medslip — MeDSLIP in C++17 (+ CUDA). See README.md.
#
#   make            build build/medslip and build/medslip_tests (CPU)
#   make test       build and run every test suite
#   make CUDA=1     also compile the CUDA kernels (nvcc + cuBLAS)
#   make MPI=1      also build build-mpi/medslip (Open MPI; + NCCL with CUDA=1): mpirun -np N ...
#   make NATIVE=1   -march=native instead of the portable x86-64-v3 (AVX2/FMA)
#   make deps       install the Debian packages the build needs (root)
#   make fixtures   regenerate the PyTorch parity fixtures (python3-torch; the image and resize
#                   fixtures also python3-opencv, python3-skimage, python3-pydicom)
#   make demo | bench | verify   see README.md
#   make fuzz FUZZ_SECONDS=N  every libFuzzer harness for N seconds (clang; docs/reliability.md)
#
# Threads: OMP_NUM_THREADS (default: all cores) sets OpenMP and OpenBLAS threads.

SHELL := /bin/bash
# Parallel by default on every core (make -jN overrides).
ifeq ($(filter -j%,$(MAKEFLAGS)),)
  MAKEFLAGS += -j$(shell nproc)
endif
CXX ?= g++
BUILD ?= build
CUDA ?= 0
MPI ?= 0
NATIVE ?= 0
SAN ?=

ARCHFLAGS := -march=x86-64-v3
ifeq ($(NATIVE),1)
  ARCHFLAGS := -march=native
endif

# OpenBLAS built for OpenMP: one thread pool shared with our own parallel loops (the
# pthread build would spin up a second pool that competes for the same cores).
BLAS_DIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_INC := /usr/include/x86_64-linux-gnu/openblas-openmp
CXXFLAGS ?= -O3
CXXFLAGS += -std=c++17 $(ARCHFLAGS) -fopenmp -Wall -Wextra -Wno-unused-parameter -I. -isystem $(BLAS_INC) -MMD -MP
LDLIBS := -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -lfmt -lyaml-cpp -ldcmjpls -ldcmjpeg -ldcmimage -ldcmimgle -ldcmdata -loflog -lofstd -licuuc -lz -ljpeg -ldnnl -lpthread
LDFLAGS := -fopenmp

ifneq ($(SAN),)
  CXXFLAGS += -fsanitize=$(SAN) -fno-omit-frame-pointer -g -O1
  LDFLAGS += -fsanitize=$(SAN)
  BUILD := build-$(SAN)
endif

# Debian packages the build, tests and demo need (make deps).
DEB_PACKAGES := g++ make pkg-config libopenblas-openmp-dev libfmt-dev doctest-dev libstb-dev \
  nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libdcmtk-dev libicu-dev zlib1g-dev \
  python3 python3-numpy libdnnl-dev libjpeg62-turbo-dev
# Open MPI (data-parallel training, make MPI=1; the MPI tests of make test) and iproute2
# (the two-namespace test). make deps installs them too when MPI=1; CI runs make deps MPI=1.
MPI_DEB_PACKAGES := libopenmpi-dev openmpi-bin iproute2
ifeq ($(MPI),1)
  DEB_PACKAGES += $(MPI_DEB_PACKAGES)
endif
# Headers whose absence means `make deps` has not run on this machine.
DEP_HEADERS := /usr/include/doctest/doctest.h /usr/include/fmt/core.h $(BLAS_INC)/cblas.h \
  /usr/include/stb/stb_image.h /usr/include/nlohmann/json.hpp /usr/include/yaml-cpp/yaml.h \
  /usr/include/CLI/CLI.hpp /usr/include/dcmtk/dcmdata/dctk.h /usr/include/unicode/uchar.h \
  /usr/include/oneapi/dnnl/dnnl.hpp /usr/include/jpeglib.h
MISSING_DEPS := $(strip $(foreach h,$(DEP_HEADERS),$(if $(wildcard $(h)),,$(h))))

LIB_SRCS := $(wildcard engine/*.cpp engine/ops/*.cpp engine/kernels/cpu/*.cpp \
  model/*.cpp data/*.cpp weights/*.cpp) $(filter-out train/main.cpp,$(wildcard train/*.cpp))
TEST_SRCS := $(wildcard tests/*.cpp tests/*/*.cpp)
CU_SRCS := $(wildcard engine/kernels/cuda/*.cu)

ifeq ($(CUDA),1)
  NVCC ?= nvcc
  # sm_90 (H100/H200) machine code + PTX so newer GPUs JIT it. Override: CUDA_ARCH="-gencode ..."
  CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
  CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell which $(NVCC)))
  CXXFLAGS += -DMEDSLIP_CUDA -isystem $(CUDA_HOME)/include
  NVCCFLAGS := -O3 -std=c++17 $(CUDA_ARCH) -DMEDSLIP_CUDA -I. -Xcompiler -fopenmp,-Wall
  LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublas
  BUILD := $(BUILD)-cuda
endif

LIB_OBJS := $(LIB_SRCS:%.cpp=$(BUILD)/%.o) $(if $(filter 1,$(CUDA)),$(CU_SRCS:%.cu=$(BUILD)/%.cu.o))
TEST_OBJS := $(TEST_SRCS:%.cpp=$(BUILD)/%.o)

# The MPI build ($(BUILD)-mpi/medslip) shares every object with the plain build except
# train/distributed.o (MPI, and NCCL under CUDA=1) and train/platform.o (the build flags
# it reports), so it costs two compiles and a link. make test builds it whenever mpicxx
# is on PATH (the MPI test cases run mpirun on it; they skip with a reason otherwise).
MPICXX := $(shell command -v mpicxx 2>/dev/null)
MPI_BUILD := $(BUILD)-mpi
MPI_CXXFLAGS = -DMEDSLIP_MPI -DOMPI_SKIP_MPICXX=1 $(shell mpicxx --showme:compile)
MPI_LDLIBS = $(shell mpicxx --showme:link) $(if $(filter 1,$(CUDA)),-lnccl,)
MPI_OBJS := $(filter-out $(BUILD)/train/distributed.o $(BUILD)/train/platform.o,$(LIB_OBJS)) \
  $(MPI_BUILD)/train/distributed.o $(MPI_BUILD)/train/platform.o $(BUILD)/train/main.o
# (Not for `make deps MPI=1` itself, which is what installs mpicxx on a fresh machine.)
ifeq ($(MPI),1)
  ifeq ($(MPICXX),)
    ifneq ($(filter-out deps clean,$(or $(MAKECMDGOALS),all)),)
      $(error MPI=1 needs Open MPI's mpicxx: run `make deps MPI=1` (packages: $(MPI_DEB_PACKAGES)))
    endif
  endif
endif

.PHONY: all test test-full deps check-deps fuzz-deps fixtures demo demo-finetune bench verify clean train eval fuzz fuzz-build triplets-eval
all: check-deps $(BUILD)/medslip $(BUILD)/medslip_tests $(if $(filter 1,$(MPI)),$(MPI_BUILD)/medslip,)
ifeq ($(CUDA),1)
	@mkdir -p build && ln -sf ../$(BUILD)/medslip build/medslip && ln -sf ../$(BUILD)/medslip_tests build/medslip_tests
endif

check-deps:
ifneq ($(MISSING_DEPS),)
	@echo "✗ missing: $(MISSING_DEPS) — running make deps"
	@$(MAKE) --no-print-directory deps
else
	@echo "✓ dependencies present (OpenBLAS, fmt, doctest, stb, libjpeg-turbo, json, yaml-cpp, CLI11, DCMTK, ICU, oneDNN)$(if $(filter 1,$(CUDA)), ✓ CUDA: $(CUDA_HOME),)"
endif

deps:
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "make deps needs root. Run:"; \
	  echo "  sudo apt-get update && sudo apt-get install -y $(DEB_PACKAGES)"; exit 1; fi
	@dpkg -s $(DEB_PACKAGES) >/dev/null 2>&1 || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEB_PACKAGES); }
	@echo "✓ Debian packages installed"

# The git commit and flags are compiled into train/platform.cpp only, through a stamp
# header that changes only when they do (so a commit does not rebuild everything).
GIT_COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
$(BUILD)/gen/stamp.h: FORCE
	@mkdir -p $(dir $@)
	@printf '#define MEDSLIP_GIT_COMMIT "%s"\n#define MEDSLIP_BUILD_FLAGS "%s"\n' '$(GIT_COMMIT)' '$(strip $(ARCHFLAGS) $(if $(filter 1,$(CUDA)),CUDA=1,CPU) $(if $(SAN),SAN=$(SAN)))' > $@.new
	@cmp -s $@.new $@ && rm $@.new || mv $@.new $@
$(BUILD)/train/platform.o: $(BUILD)/gen/stamp.h
$(BUILD)/train/platform.o: CXXFLAGS += -include $(BUILD)/gen/stamp.h
.PHONY: FORCE
FORCE:

$(MPI_BUILD)/gen/stamp.h: FORCE
	@mkdir -p $(dir $@)
	@printf '#define MEDSLIP_GIT_COMMIT "%s"\n#define MEDSLIP_BUILD_FLAGS "%s"\n' '$(GIT_COMMIT)' '$(strip $(ARCHFLAGS) $(if $(filter 1,$(CUDA)),CUDA=1,CPU) MPI=1 $(if $(SAN),SAN=$(SAN)))' > $@.new
	@cmp -s $@.new $@ && rm $@.new || mv $@.new $@
$(MPI_BUILD)/train/platform.o: train/platform.cpp $(MPI_BUILD)/gen/stamp.h | check-deps
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -include $(MPI_BUILD)/gen/stamp.h -c $< -o $@
$(MPI_BUILD)/train/distributed.o: train/distributed.cpp | check-deps
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(MPI_CXXFLAGS) -c $< -o $@
$(MPI_BUILD)/medslip: $(MPI_OBJS)
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS) $(MPI_LDLIBS)

# AdamW's loop vectorises only without errno for sqrt; the square root is IEEE's correctly
# rounded one either way (sqrtss or vsqrtps), so the bits are the same, 4-8x faster.
$(BUILD)/engine/kernels/cpu/adamw.o: CXXFLAGS += -fno-math-errno
$(BUILD)/%.o: %.cpp | check-deps
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu | check-deps
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/medslip: $(LIB_OBJS) $(BUILD)/train/main.o
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/medslip_tests: $(LIB_OBJS) $(TEST_OBJS)
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# All suites. TESTS=pattern runs a subset (doctest -tc filter), e.g. make test TESTS='engine*'.
test: all $(if $(MPICXX),$(MPI_BUILD)/medslip,)
	$(if $(MPICXX),,@echo "note: no mpicxx on PATH: the MPI test cases will skip (make deps MPI=1 installs Open MPI)")
	cd . && MEDSLIP_MPI_BIN=$(if $(MPICXX),$(MPI_BUILD)/medslip,) ./$(BUILD)/medslip_tests $(if $(TESTS),-tc='$(TESTS)',) $(TEST_ARGS)

# Includes the slow full-size parity check (ResNet-50, 224) with a generated fixture.
# make test, then the full-size parity check (ResNet-50, 224, every gradient) against the
# official code, with a generated fixture (needs python3-torch and MEDSLIP_OFFICIAL_REPO).
test-full: test
	/usr/bin/python3 tests/full_parity.py

fixtures:
	/usr/bin/python3 tests/make_fixtures.py

# The whole pipeline on the synthetic set (README "make demo").
demo: all
	train/demo.sh

# Fine-tuning on the real radiographs in ../shared/data (README "Fine-tuning"): classification
# (pneumonia-kermany-224) and lung segmentation (jsrt-seg-256); INIT=checkpoint, FT_EPOCHS=N.
demo-finetune: all
	train/demo_finetune.sh

# Thin wrappers: make train CONFIG=my.yaml [OUT=runs/x]; make eval CHECKPOINT=... BOOKS=... CSV=...
train: all
	./$(BUILD)/medslip pretrain --config $(CONFIG) $(if $(OUT),--out $(OUT),)
eval: all
	./$(BUILD)/medslip zeroshot --checkpoint $(CHECKPOINT) --books $(BOOKS) --csv $(CSV) $(if $(DATASET),--dataset $(DATASET),)

# Throughput table (docs/performance.md): training steps and forward passes on synthetic
# batches, one worker process per row. OFFICIAL=PATH (a clone of Shef-AIRE/MeDSLIP) also
# times the original model (Debian's python3-torch) step by step in alternation with ours;
# BENCH_FULL=1 runs the full sweep (more steps, inference at batch 1 and 4, ResNet-18 rows).
# BENCH_ARGS passes more options (medslip bench --help), e.g. BENCH_ARGS='--threads 2'.
BENCH_PYTHON ?= /usr/bin/python3
OFFICIAL ?= $(MEDSLIP_OFFICIAL_REPO)
# With mpicxx present it ends with the data-parallel rows (1 rank x 2 threads vs 2 ranks x 1
# thread, all-reduce share, efficiency; BENCH_RANKS=N for another rank count).
BENCH_RANKS ?= 2
bench: check-deps $(BUILD)/medslip $(if $(MPICXX),$(MPI_BUILD)/medslip,)
	./$(BUILD)/medslip bench $(if $(filter 1,$(BENCH_FULL)),--full,) $(if $(OFFICIAL),--official '$(OFFICIAL)' --python '$(BENCH_PYTHON)',) $(if $(MPICXX),--ranks $(BENCH_RANKS) --mpi-bin $(MPI_BUILD)/medslip,) $(BENCH_ARGS)

# Reports -> triplets on the IU X-ray reports, scored against their MeSH terms (README "Reports
# to triplets"): development ids <= 2000, held out > 2000; then the independent Python re-scorer
# must agree with every count. IU_REPORTS=path overrides the csv.
IU_REPORTS ?= ../shared/data/reports/iu_xray_reports.csv
triplets-eval: check-deps $(BUILD)/medslip
	./$(BUILD)/medslip triplets --reports $(IU_REPORTS) --text-columns findings,impression --id-column report_id \
	  --image-column image_ids --out $(BUILD)/triplets-eval --mesh-table data/report_mesh.tsv --heldout-above 2000
	/usr/bin/python3 tests/score_triplets.py --out $(BUILD)/triplets-eval --reports $(IU_REPORTS) \
	  --table data/report_mesh.tsv --heldout-above 2000 --compare $(BUILD)/triplets-eval/eval.json

# Check this build against the official MeDSLIP (constants recorded from PyTorch).
verify: all
	./$(BUILD)/medslip verify


# ---- Fuzzing (docs/reliability.md) ------------------------------------------------------
# One libFuzzer binary per target in tests/fuzz/<name>.cpp, built with clang and
# AddressSanitizer + UndefinedBehaviorSanitizer against the library (single-threaded: no
# OpenMP codegen, libgomp linked for OpenBLAS). `make fuzz FUZZ_SECONDS=N` runs each for N
# seconds on a corpus seeded from tests/fuzz/corpus/<name>/, the fixtures and ../shared/data;
# a finding stops it with the crashing input saved in $(FUZZ_BUILD)/findings/<name>/.
# FUZZ_JOBS=k runs k harnesses at a time; FUZZ_TARGETS='image dicom' picks some.
FUZZ_CXX ?= clang++
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1
FUZZ_BUILD := build-fuzz
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1
FUZZ_CXXFLAGS := -std=c++17 -march=x86-64-v3 -Wno-unknown-pragmas -I. -isystem $(BLAS_INC) -MMD -MP $(FUZZ_SAN)
FUZZ_ALL := $(sort $(basename $(notdir $(filter-out tests/fuzz/fuzz.cpp tests/fuzz/replay.cpp,$(wildcard tests/fuzz/*.cpp)))))
FUZZ_TARGETS ?= $(FUZZ_ALL)
# The parsers live below train/ (engine, data, weights, model): the commands are not built.
FUZZ_LIB_OBJS := $(patsubst %.cpp,$(FUZZ_BUILD)/%.o,$(filter-out train/%,$(LIB_SRCS)))
FUZZ_LDLIBS := $(subst -lpthread,,$(LDLIBS)) -lgomp -lpthread

# clang (Debian's clang 14 carries libFuzzer and the sanitizer runtimes) installed like make
# deps does: as root with apt-get, otherwise the command to run.
fuzz-deps: check-deps
	@command -v $(FUZZ_CXX) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then echo "make fuzz needs $(FUZZ_CXX). Run:"; \
	    echo "  sudo apt-get update && sudo apt-get install -y clang"; exit 1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang; }
$(FUZZ_BUILD)/%.o: %.cpp | fuzz-deps
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
$(FUZZ_BUILD)/libmedslip.a: $(FUZZ_LIB_OBJS)
	@rm -f $@ && ar rcs $@ $^
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/%.o $(FUZZ_BUILD)/tests/fuzz/fuzz.o $(FUZZ_BUILD)/libmedslip.a tests/fuzz/libfuzzer/main.cpp
	$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -fsanitize=fuzzer -DMEDSLIP_FUZZ_TARGET='"$*"' tests/fuzz/libfuzzer/main.cpp \
	  $(FUZZ_BUILD)/tests/fuzz/$*.o $(FUZZ_BUILD)/tests/fuzz/fuzz.o $(FUZZ_BUILD)/libmedslip.a -o $@ $(FUZZ_LDLIBS)
fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
fuzz: fuzz-build
	FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_JOBS=$(FUZZ_JOBS) tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)
.PRECIOUS: $(FUZZ_BUILD)/%.o $(FUZZ_BUILD)/tests/fuzz/%.o

clean:
	rm -rf build build-* 

-include $(LIB_OBJS:.o=.d) $(TEST_OBJS:.o=.d) $(MPI_BUILD)/train/distributed.d
-include $(wildcard $(FUZZ_BUILD)/*/*.d $(FUZZ_BUILD)/*/*/*.d $(FUZZ_BUILD)/*/*/*/*.d $(FUZZ_BUILD)/*/*/*/*/*.d)
