"""The networks: GPT-2 and the Llama family on one causal-LM skeleton, their key/value cache, the activation recorder and the CPU speed-ups."""
