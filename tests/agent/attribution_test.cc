#include "agent/attribution.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "agent/collectors/engine_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetwes::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

v1::Device Dev(const std::string& id, v1::DeviceKind kind, v1::PowerScope scope, double joules,
               v1::ThermalState state = v1::THERMAL_STATE_NORMAL) {
  v1::Device d;
  d.set_id(id);
  d.set_kind(kind);
  d.set_power_scope(scope);
  if (joules >= 0) d.set_energy_j(joules);
  d.set_thermal_state(state);
  return d;
}
v1::Device Gpu(const std::string& id, double joules,
               v1::ThermalState state = v1::THERMAL_STATE_NORMAL) {
  return Dev(id, v1::DEVICE_KIND_GPU_NVIDIA, v1::POWER_SCOPE_GPU_BOARD, joules, state);
}
v1::Device Package(double joules) {
  return Dev("package-0", v1::DEVICE_KIND_CPU, v1::POWER_SCOPE_CPU_PACKAGE, joules);
}

v1::ModelSample Model(const std::string& name, double tps, std::optional<uint64_t> vram,
                      uint32_t running = 0) {
  v1::ModelSample m;
  m.set_model(name);
  m.set_decode_tokens_per_s(tps);
  if (vram.has_value()) m.set_vram_bytes(*vram);
  m.set_requests_running(running);
  return m;
}

std::vector<std::optional<ModelEnergy>> Attribute(const std::vector<v1::Device>& devices,
                                                  const std::vector<v1::ModelSample>& models,
                                                  std::vector<ModelPlacement> placements = {}) {
  std::vector<const v1::ModelSample*> ptrs;
  for (const v1::ModelSample& m : models) ptrs.push_back(&m);
  placements.resize(models.size());
  return AttributeEnergy(devices, 2.0, ptrs, placements);
}

TEST(AttributionTest, GpuEnergyByVramHostEnergyToCpuOnlyModels) {
  // 2 s window: gpu0 400 J (200 W), package 100 J (50 W).
  std::vector<v1::ModelSample> models = {Model("big", 40, 30'000), Model("small", 90, 10'000),
                                         Model("cpu", 5, 0), Model("idle", 0, 50'000)};
  auto e = Attribute({Gpu("gpu0", 400), Package(100)}, models);
  ASSERT_TRUE(e[0].has_value() && e[1].has_value() && e[2].has_value());
  EXPECT_DOUBLE_EQ(e[0]->watts, 150.0);
  EXPECT_DOUBLE_EQ(e[1]->watts, 50.0);
  EXPECT_THAT(e[0]->scopes, ElementsAre(v1::POWER_SCOPE_GPU_BOARD));
  EXPECT_DOUBLE_EQ(e[2]->watts, 50.0);  // the package, alone
  EXPECT_THAT(e[2]->scopes, ElementsAre(v1::POWER_SCOPE_CPU_PACKAGE));
  EXPECT_FALSE(e[3].has_value());  // loaded, inactive: nothing
}

TEST(AttributionTest, RunningRequestsWithoutTokensCountAsActive) {
  std::vector<v1::ModelSample> models = {Model("a", 100, std::nullopt),
                                         Model("prefilling", 0, std::nullopt, 2)};
  auto e = Attribute({Gpu("gpu0", 300)}, models);
  ASSERT_TRUE(e[1].has_value());
  EXPECT_DOUBLE_EQ(e[0]->watts, 75.0);  // VRAM unknown: equal shares
  EXPECT_DOUBLE_EQ(e[1]->watts, 75.0);
}

TEST(AttributionTest, ProcessListsPlaceModelsOnTheirGpus) {
  std::vector<v1::ModelSample> models = {Model("on0", 10, std::nullopt),
                                         Model("on0and1", 10, std::nullopt),
                                         Model("nowhere", 10, std::nullopt)};
  std::vector<ModelPlacement> p(3);
  p[0].gpu_memory = {{"gpu0", 3'000}};
  p[1].gpu_memory = {{"gpu0", 1'000}, {"gpu1", std::nullopt}};
  p[2].no_gpu_memory = true;
  auto e = Attribute({Gpu("gpu0", 400, v1::THERMAL_STATE_FAIR), Gpu("gpu1", 100), Package(60)},
                     models, p);
  ASSERT_TRUE(e[0] && e[1] && e[2]);
  EXPECT_DOUBLE_EQ(e[0]->watts, 150.0);        // 3/4 of gpu0
  EXPECT_DOUBLE_EQ(e[1]->watts, 50.0 + 50.0);  // 1/4 of gpu0 + all of gpu1
  EXPECT_EQ(e[0]->thermal_state, v1::THERMAL_STATE_FAIR);
  EXPECT_EQ(e[2]->thermal_state, v1::THERMAL_STATE_NORMAL);
  EXPECT_DOUBLE_EQ(e[2]->watts, 30.0);  // the package: it holds no GPU memory
}

TEST(AttributionTest, NoGpuMeansEveryModelOnTheHostAndNoEnergyMeansNothing) {
  std::vector<v1::ModelSample> models = {Model("a", 10, 3'000), Model("b", 10, 1'000)};
  auto e = Attribute({Package(80), Dev("dram-0", v1::DEVICE_KIND_DRAM, v1::POWER_SCOPE_DRAM, 8)},
                     models);
  EXPECT_DOUBLE_EQ(e[0]->watts, 33.0);
  EXPECT_DOUBLE_EQ(e[1]->watts, 11.0);
  EXPECT_THAT(e[0]->scopes, ElementsAre(v1::POWER_SCOPE_CPU_PACKAGE, v1::POWER_SCOPE_DRAM));
  // A GPU without an energy reading: its models get nothing rather than the CPU's energy.
  e = Attribute({Gpu("gpu0", -1), Package(80)}, models);
  EXPECT_FALSE(e[0].has_value());
  EXPECT_FALSE(e[1].has_value());
}

// A throwaway directory standing for "/" with a fake procfs.
class FakeProc {
 public:
  FakeProc() {
    std::string tmpl = (fs::temp_directory_path() / "fleetwes-proc-XXXXXX").string();
    EXPECT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  ~FakeProc() { fs::remove_all(root_); }
  const std::string& root() const { return root_; }
  void Write(const std::string& rel, const std::string& text) const {
    fs::path p = fs::path(root_) / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  void Process(int pid, int ppid, const std::string& comm, std::vector<int64_t> sockets) const {
    Write("proc/" + std::to_string(pid) + "/stat",
          std::to_string(pid) + " (" + comm + ") S " + std::to_string(ppid) + " 1 1 0 -1\n");
    fs::create_directories(fs::path(root_) / "proc" / std::to_string(pid) / "fd");
    int fd = 3;
    for (int64_t inode : sockets) {
      fs::create_symlink(
          "socket:[" + std::to_string(inode) + "]",
          fs::path(root_) / "proc" / std::to_string(pid) / "fd" / std::to_string(fd++));
    }
  }

 private:
  std::string root_;
};

constexpr char kTcpHeader[] =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n";

TEST(EngineProcessTest, PortToListeningPidAndDescendants) {
  FakeProc proc;
  proc.Write("proc/net/tcp",
             std::string(kTcpHeader) +
                 "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  "
                 "1000        0 44321 1 0000000000000000 100 0 0 10 0\n"
                 "   1: 0100007F:1F90 0100007F:D2C4 01 00000000:00000000 00:00000000 00000000  "
                 "1000        0 55555 1 0000000000000000 20 4 30 10 -1\n");
  proc.Write("proc/net/tcp6",
             std::string(kTcpHeader) +
                 "   0: 00000000000000000000000000000000:1F40 "
                 "00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 "
                 "00000000  1000        0 66000 1 0000000000000000 100 0 0 10 0\n");
  proc.Process(100, 1, "llama-server", {44321});
  proc.Process(101, 100, "worker (gpu) 0", {});
  proc.Process(102, 101, "grandchild", {});
  proc.Process(103, 1, "other", {55555});
  proc.Process(200, 1, "python3", {66000});
  proc.Write("proc/self/stat", "garbage");

  auto llama = EngineProcesses(proc.root(), 8080);
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_THAT(*llama, UnorderedElementsAre(100, 101, 102));
  auto vllm = EngineProcesses(proc.root(), 8000);
  ASSERT_TRUE(vllm.ok()) << vllm.status();
  EXPECT_THAT(*vllm, UnorderedElementsAre(200));
  EXPECT_EQ(EngineProcesses(proc.root(), 11434).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(EngineProcesses(proc.root() + "/nothing", 8080).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(EngineProcessTest, PortOfTheEngineUrl) {
  EXPECT_EQ(EnginePort("http://127.0.0.1:8080").value(), 8080);
  EXPECT_EQ(EnginePort("http://[::1]:8000/v1").value(), 8000);
  EXPECT_EQ(EnginePort("https://gpu-box").value(), 443);
  EXPECT_EQ(EnginePort("http://[::1]").value(), 80);
  EXPECT_FALSE(EnginePort("ftp://x").ok());
}

}  // namespace
}  // namespace fleetwes::agent
