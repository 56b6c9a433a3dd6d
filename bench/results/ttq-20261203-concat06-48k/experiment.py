# Run bench/time_to_quality.py with MiniLM's context = [embedding layer states, last layer states] (768 wide).
# Layer 0 says plainly which word a token is; the last layer says what it belongs to in the sentence.
import os, runpy, sys, torch
import text2imagegen.model as M
LAYERS = [int(l) for l in os.environ.get("LAYERS", "0,6").split(",")]
@torch.no_grad()
def encode_pooled(self, prompts):
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    tokens = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt")
    ids, mask = tokens.input_ids.to(self.model.device), tokens.attention_mask.to(self.model.device)
    self.model.eval()
    hs = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    hidden = torch.cat([hs[l] for l in LAYERS], -1)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return hidden, (hidden*m).sum(1) / m.sum(1).clamp(min=1)
M.TextEncoder.encode_pooled = encode_pooled
M.TextEncoder.dim = property(lambda self: self.model.config.hidden_size * len(LAYERS))
sys.argv = ["bench/time_to_quality.py"] + sys.argv[1:]
runpy.run_path("bench/time_to_quality.py", run_name="__main__")
