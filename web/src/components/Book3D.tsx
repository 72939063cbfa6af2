// The 3D depth-over-time view (three.js): one bar per (snapshot, price level), its height the
// size resting there; bids green, asks red, older snapshots dimmer and further back. Drag to
// orbit, wheel to zoom. Renders on demand (no animation loop). Loaded lazily; without WebGL
// (jsdom, a browser with it off) it says so instead of crashing.
import { useEffect, useMemo, useRef, useState } from "react";
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import type { Book } from "../api";
import { depthGrid } from "../book";
import { fmtInt, fmtNum, fmtTime } from "../format";

let webglProbe: boolean | null = null;

/** Whether this browser gives a WebGL context (probed once; the probe's context is released). */
export function webglAvailable(): boolean {
  if (webglProbe !== null) return webglProbe;
  if (typeof window === "undefined" || typeof document === "undefined") return false;
  if (/jsdom/i.test(navigator.userAgent)) return (webglProbe = false);
  try {
    const c = document.createElement("canvas");
    const gl = (c.getContext("webgl2") || c.getContext("webgl")) as WebGLRenderingContext | null;
    gl?.getExtension("WEBGL_lose_context")?.loseContext();
    webglProbe = !!gl;
  } catch {
    webglProbe = false;
  }
  return webglProbe;
}

interface Scene3D {
  renderer: THREE.WebGLRenderer;
  scene: THREE.Scene;
  camera: THREE.PerspectiveCamera;
  controls: OrbitControls;
  bars: THREE.InstancedMesh | null;
  render: () => void;
}

const WIDTH = 40; // x extent (price)
const DEPTH = 30; // z extent (time)
const HEIGHT = 12; // y extent (size)
const BID = new THREE.Color("#1f9d55");
const ASK = new THREE.Color("#d64545");

export default function Book3D({ history, height = 260 }: { history: Book[]; height?: number }) {
  const host = useRef<HTMLDivElement>(null);
  const ctx = useRef<Scene3D | null>(null);
  const [error, setError] = useState<string | null>(() => (webglAvailable() ? null : "WebGL is not available"));
  // redraw at most twice a second, however fast books arrive
  const [shown, setShown] = useState(history);
  const shownAt = useRef(0);
  useEffect(() => {
    const wait = 500 - (Date.now() - shownAt.current);
    const show = () => {
      shownAt.current = Date.now();
      setShown(history);
    };
    if (wait <= 0) {
      show();
      return;
    }
    const t = setTimeout(show, wait);
    return () => clearTimeout(t);
  }, [history]);
  const grid = useMemo(() => depthGrid(shown, 40), [shown]);

  // set up once
  useEffect(() => {
    const el = host.current;
    if (!el || error) return;
    let renderer: THREE.WebGLRenderer;
    try {
      renderer = new THREE.WebGLRenderer({ antialias: true });
    } catch (e) {
      setError(`WebGL: ${String(e)}`);
      return;
    }
    renderer.setPixelRatio(Math.min(2, window.devicePixelRatio || 1));
    renderer.setClearColor(0x11151c);
    el.appendChild(renderer.domElement);
    const scene = new THREE.Scene();
    const camera = new THREE.PerspectiveCamera(45, 2, 0.1, 500);
    camera.position.set(0, 32, 48);
    scene.add(new THREE.AmbientLight(0xffffff, 0.55));
    const sun = new THREE.DirectionalLight(0xffffff, 1.1);
    sun.position.set(20, 40, 30);
    scene.add(sun);
    const floor = new THREE.GridHelper(Math.max(WIDTH, DEPTH) + 4, 20, 0x3a4250, 0x232a35);
    scene.add(floor);
    const controls = new OrbitControls(camera, renderer.domElement);
    controls.target.set(0, 3, 0);
    const s: Scene3D = {
      renderer,
      scene,
      camera,
      controls,
      bars: null,
      render: () => renderer.render(scene, camera),
    };
    controls.addEventListener("change", s.render);
    controls.update();
    const resize = () => {
      const w = Math.max(100, el.clientWidth);
      renderer.setSize(w, height);
      camera.aspect = w / height;
      camera.updateProjectionMatrix();
      s.render();
    };
    resize();
    const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(resize) : null;
    ro?.observe(el);
    ctx.current = s;
    return () => {
      ro?.disconnect();
      controls.removeEventListener("change", s.render);
      controls.dispose();
      if (s.bars) {
        s.bars.geometry.dispose();
        (s.bars.material as THREE.Material).dispose();
      }
      floor.geometry.dispose();
      (floor.material as THREE.Material).dispose();
      renderer.dispose();
      renderer.domElement.remove();
      ctx.current = null;
    };
  }, [error, height]);

  // rebuild the bars when the history changes
  useEffect(() => {
    const s = ctx.current;
    if (!s) return;
    if (s.bars) {
      s.scene.remove(s.bars);
      s.bars.geometry.dispose();
      (s.bars.material as THREE.Material).dispose();
      s.bars = null;
    }
    const { prices, times, cells, maxSize } = grid;
    if (cells.length && maxSize > 0) {
      const nP = prices.length;
      const nT = times.length;
      const cw = WIDTH / Math.max(1, nP);
      const cd = DEPTH / Math.max(1, nT);
      const geom = new THREE.BoxGeometry(cw * 0.85, 1, cd * 0.85);
      geom.translate(0, 0.5, 0); // grow from the floor
      const mat = new THREE.MeshLambertMaterial();
      const mesh = new THREE.InstancedMesh(geom, mat, cells.length);
      const m = new THREE.Matrix4();
      const c = new THREE.Color();
      cells.forEach((cell, i) => {
        const h = Math.max(0.02, (cell.size / maxSize) * HEIGHT);
        const x = -WIDTH / 2 + (cell.p + 0.5) * cw;
        const z = -DEPTH / 2 + (cell.t + 0.5) * cd; // newest nearest the camera
        m.makeScale(1, h, 1);
        m.setPosition(x, 0, z);
        mesh.setMatrixAt(i, m);
        const age = nT > 1 ? cell.t / (nT - 1) : 1;
        c.copy(cell.side === "bid" ? BID : ASK).multiplyScalar(0.35 + 0.65 * age);
        mesh.setColorAt(i, c);
      });
      mesh.instanceMatrix.needsUpdate = true;
      if (mesh.instanceColor) mesh.instanceColor.needsUpdate = true;
      s.scene.add(mesh);
      s.bars = mesh;
    }
    s.render();
  }, [grid]);

  const { prices, times, maxSize } = grid;
  return (
    <figure className="book3d" data-testid="book-3d">
      {error ? (
        <div className="empty">3D view unavailable: {error}</div>
      ) : (
        <div ref={host} className="book3d-canvas" style={{ height }} />
      )}
      <figcaption className="muted">
        {times.length} snapshots {times.length ? `${fmtTime(times[0])}–${fmtTime(times[times.length - 1])}` : ""} · price{" "}
        {prices.length ? `${fmtNum(prices[0])}–${fmtNum(prices[prices.length - 1])}` : "—"} (left→right) · height = size (max{" "}
        {fmtInt(maxSize)}) · drag to orbit
      </figcaption>
    </figure>
  );
}
