"""In-distribution: on fresh `records` docs, greedy answers to each question (context = doc up to it)."""
import sys, random
from pivotrl.lab.siblings import listed_records_doc
from pivotrl.lab.pretrain import greedy_completions
model = sys.argv[1]; rng = random.Random("records-probe")
prompts, wants = [], []
for _ in range(15):
    m, t = listed_records_doc(rng)
    
    for i in range(6, len(m), 2):
        prompts.append((m[:i], t)); wants.append(m[i]["content"].rstrip(".").split()[-1])
texts = greedy_completions(model, prompts, max_new_tokens=12)
right = sum(w in t.replace(".", " ").split() for w, t in zip(wants, texts))
print(model, "records answers right", right, "of", len(wants))
