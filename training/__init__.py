"""Consistency training for cllm (Kou et al. 2024, CLLMs): reads the HDF5 Jacobi trajectories that
`cllm trajectories` writes, fine-tunes a LLaMA-family model with the consistency + AR losses, and
writes an HF safetensors checkpoint that `cllm generate` serves. See training/README.md."""
