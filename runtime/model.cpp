#include "runtime/model.h"

#include "kernels/check.h"
#include "runtime/cpu_model.h"

namespace cllm {

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::Cpu;
  if (name == "cuda") return Device::Cuda;
  CLLM_FAIL("unknown device '" << name << "' (expected cpu or cuda)");
}

std::unique_ptr<Model> make_model(const CheckpointReader& ckpt, Device device, const LoadProgress& progress) {
  switch (device) {
    case Device::Cpu:
      return std::make_unique<CpuModel>(ckpt.config(), load_weights_f32(ckpt, progress));
    case Device::Cuda:
#ifdef CLLM_HAVE_CUDA
      return make_cuda_model(ckpt, progress);
#else
      CLLM_FAIL("this cllm was built without CUDA; rebuild with -DCLLM_CUDA=ON to use --device cuda");
#endif
  }
  CLLM_FAIL("unreachable device");
}

}  // namespace cllm
