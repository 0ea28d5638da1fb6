"""The BPE tokenizer travels to Ray Data's read tasks inside the methods' preprocessing closures:
it must pickle small and come back encoding exactly as before."""
import pickle

import numpy as np
import ray.cloudpickle as cloudpickle

from contrastlab.methods.clip.method import CLIPConfig, image_text_sample_fn
from contrastlab.platform.text import BPETokenizer

CAPTIONS = ["a small red circle above a blue square", "<|mask|> green triangle", ""]


def test_tokenizer_pickles_as_its_context_length_and_encodes_the_same():
    tok = BPETokenizer(context_length=12)
    payload = pickle.dumps(tok)
    assert len(payload) < 1024, f"{len(payload)} bytes: the BPE tables travelled with the tokenizer"
    back = pickle.loads(payload)
    assert back.context_length == 12
    np.testing.assert_array_equal(back.encode(CAPTIONS), tok.encode(CAPTIONS))
    assert back.decode(tok.encode(CAPTIONS[:1])[0]) == CAPTIONS[0]


def test_preprocessing_closure_sent_to_read_tasks_is_small():
    # Ray ships a read task's function with cloudpickle and warns above 1 MiB; with the BPE tables
    # inside, CLIP's/DeCLIP's closures were 2.0 MiB.
    fn = image_text_sample_fn(CLIPConfig(), "train", {})
    assert len(cloudpickle.dumps(fn)) < 64 * 1024
