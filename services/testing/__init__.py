"""What the tests, the benchmarks and the lab share, shipped beside the product as diffusers ships its testing
utilities: nothing in the services imports it, only the lab's commands that need it (`gift rehearsal`).

- `fixtures.py`: pytest fixtures (one torch thread, the pipeline's tokenizer, tiny stand-ins)
- `generator.py`: quick-takeover settings, batcher tasks, waits and reads on a running stack
- `trainer.py`: a tiny architecture file, a task from memory, one configuration's step time and peak memory
- `standins.py`: SD v1.5 and ViT-B-16-quickgelu with random weights, in the layouts users have
- `mtil_fixtures.py`: tiny copies of the eleven MTIL datasets, on disk as torchvision's classes read them
- `fault_trials.py`: Redis and worker faults against a local stack, and their figures
- `adapters.py`: tiny LoRA adapters made with peft as users make theirs, and spoiled copies the service refuses
- `auth_walk.py`: every route with bad and other tenants' credentials
- `otlp.py`: an OTLP/HTTP receiver that decodes and keeps the spans it is sent
- `installs.py`: fresh virtual environments from the lock, with the project installed as users install it
"""
