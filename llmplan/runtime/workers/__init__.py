"""Multi-worker instances: one model's decoder layers over N worker processes, live layer migration.

``llmplan serve --workers N`` builds the serving core over a
:class:`~llmplan.runtime.workers.executor.PipelineExecutor` (rank 0, in the server process);
ranks 1..N-1 run :func:`~llmplan.runtime.workers.worker.worker_main`. Modules:

* :mod:`.stages`   -- the stage map (layer ranges), ``--layer-split`` parsing, moves (pure);
* :mod:`.comm`     -- point-to-point tensors over the instance's own process group, link probe;
* :mod:`.stage`    -- one worker's layers + KV pools: a pipeline step, sending/receiving layers;
* :mod:`.protocol` -- control messages over each worker's pipe;
* :mod:`.worker`   -- the worker process loop;
* :mod:`.pool`      -- ranks 1..N-1 as processes: start-up handshake, broadcast, failure, stop;
* :mod:`.migration` -- layer moves, attention offloads/restores, and the queue that runs them between steps;
* :mod:`.control`   -- the migration controller's loop: live worker loads in, moves out;
* :mod:`.executor`  -- the executor (rank 0): steps, stats, and the parts above put together;
* :mod:`.engine`   -- ``build_pipeline_engine`` (what ``build_engine(workers=N)`` calls);
* :mod:`.scripted` -- a fixed schedule of steps and layer migrations on the same workers, outside a server;
* the HTTP side (``POST /admin/migrate``, ...) is :mod:`llmplan.runtime.server.workers_admin`.
"""
