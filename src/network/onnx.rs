//! The inference graph of a network as an ONNX model (`adamatch-wgpu export --onnx`).
//!
//! Input `image`: uint8 `[N, S, S, 3]` (RGB, NHWC, a dynamic batch), the pixels as an image
//! decoder gives them, scaled inside the graph as the weights' `input_scale` says (`Cast`,
//! `Sub`, `Div`, the same f32 operations as [`InputScale::apply`]) and transposed to NCHW: the
//! scaling is a property of the weights, so a deployer cannot pair a model with the wrong one.
//! Output `logits`: float `[N, classes]`. Plain ops of opset 13 only: Conv (TensorFlow's SAME
//! padding written as explicit pads for the model's fixed side), BatchNormalization,
//! LeakyRelu or Relu, Add, GlobalAveragePool, Flatten, Gemm. The class names, input scale and
//! network are in `metadata_props`.

use prost::Message;

use super::architecture::{Activation, Architecture, BnLayer, ConvLayer, WideResNetConfig};
use crate::input::InputScale;

/// The ONNX operator set the graph is written for, and the IR version that goes with it.
pub const OPSET: i64 = 13;
const IR_VERSION: i64 = 7;

/// What the model is built from: the network, its flat parameters and running statistics (in
/// the layout of `Architecture::new(config)`), the input scaling and the class names.
pub struct OnnxSource<'a> {
    pub config: &'a WideResNetConfig,
    pub params: &'a [f32],
    pub running: &'a [f32],
    pub input_scale: InputScale,
    pub classes: &'a [String],
}

/// The model's protobuf bytes.
pub fn export(src: &OnnxSource) -> anyhow::Result<Vec<u8>> {
    let arch = Architecture::new(src.config)?;
    anyhow::ensure!(
        src.params.len() == arch.params_len() && src.running.len() == arch.running_len(),
        "the parameters do not fit the network ({} and {} values for {} and {})",
        src.params.len(),
        src.running.len(),
        arch.params_len(),
        arch.running_len()
    );
    anyhow::ensure!(
        src.classes.len() == src.config.num_classes,
        "{} class names for {} outputs",
        src.classes.len(),
        src.config.num_classes
    );
    let mut g = GraphBuilder::new(src, &arch);
    let x = g.input_scaling();
    let mut act = g.conv(&x, &arch.stem, arch.image_size);
    for b in &arch.blocks {
        let u1 = g.bn_act(&act, &b.bn1);
        let h1 = g.conv(&u1, &b.conv1, b.in_hw);
        let u2 = g.bn_act(&h1, &b.bn2);
        let out = g.conv(&u2, &b.conv2, b.out_hw);
        let source = if b.shortcut_activated { u1 } else { act };
        let short = match &b.shortcut {
            Some(sc) => g.conv(&source, sc, b.in_hw),
            None => source,
        };
        act = g.node("Add", &[&out, &short], vec![]);
    }
    let u = g.bn_act(&act, &arch.head_bn);
    let pooled = g.node("GlobalAveragePool", &[&u], vec![]);
    let flat = g.node("Flatten", &[&pooled], vec![int("axis", 1)]);
    let w = g.initializer_slice(arch.dense_w, src.params);
    let bias = g.initializer_slice(arch.dense_b, src.params);
    let logits = g.node("Gemm", &[&flat, &w, &bias], vec![]);
    g.rename_output(&logits, "logits");
    Ok(g.finish().encode_to_vec())
}

/// Pads of TensorFlow's SAME for a square input of side `in_hw`: `[begin, end]` per axis
/// (the extra row and column of an odd total go at the end, as TensorFlow puts them).
fn same_pads(in_hw: usize, kernel: usize, stride: usize) -> [i64; 2] {
    let out = in_hw.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(in_hw);
    [(total / 2) as i64, (total - total / 2) as i64]
}

struct GraphBuilder<'a> {
    src: &'a OnnxSource<'a>,
    arch: &'a Architecture,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    next: usize,
}

impl<'a> GraphBuilder<'a> {
    fn new(src: &'a OnnxSource<'a>, arch: &'a Architecture) -> Self {
        GraphBuilder {
            src,
            arch,
            nodes: Vec::new(),
            initializers: Vec::new(),
            next: 0,
        }
    }

    /// A node with a fresh output name.
    fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        self.next += 1;
        let out = format!("{}_{}", op.to_ascii_lowercase(), self.next);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute,
            domain: String::new(),
        });
        out
    }

    fn initializer(&mut self, name: String, dims: Vec<i64>, data: Vec<f32>) -> String {
        self.initializers.push(TensorProto {
            dims,
            data_type: FLOAT,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// A parameter tensor as it is stored (name and shape of its spec).
    fn initializer_slice(&mut self, spec: usize, flat: &[f32]) -> String {
        let s = &self.arch.param_specs()[spec];
        let dims = s.shape.iter().map(|&d| d as i64).collect();
        self.initializer(s.name.clone(), dims, flat[s.offset..s.offset + s.len()].to_vec())
    }

    /// uint8 NHWC pixels -> the network's scaled float NCHW input.
    fn input_scaling(&mut self) -> String {
        let x = self.node("Cast", &["image"], vec![int("to", FLOAT as i64)]);
        let scaled = match self.src.input_scale {
            InputScale::Paper => {
                let offset = self.initializer("input_offset".into(), vec![], vec![127.5]);
                let centred = self.node("Sub", &[&x, &offset], vec![]);
                let divisor = self.initializer("input_divisor".into(), vec![], vec![128.0]);
                self.node("Div", &[&centred, &divisor], vec![])
            }
            InputScale::Keras => {
                let divisor = self.initializer("input_divisor".into(), vec![], vec![255.0]);
                self.node("Div", &[&x, &divisor], vec![])
            }
        };
        self.node("Transpose", &[&scaled], vec![ints("perm", &[0, 3, 1, 2])])
    }

    /// A convolution over a square input of side `in_hw`: HWIO weights as OIHW, SAME padding.
    fn conv(&mut self, x: &str, c: &ConvLayer, in_hw: usize) -> String {
        let s = &self.arch.param_specs()[c.weight];
        let hwio = &self.src.params[s.offset..s.offset + s.len()];
        let (k, ci, co) = (c.kernel, c.in_c, c.out_c);
        let mut oihw = vec![0.0f32; hwio.len()];
        for h in 0..k {
            for w in 0..k {
                for i in 0..ci {
                    for o in 0..co {
                        oihw[((o * ci + i) * k + h) * k + w] = hwio[((h * k + w) * ci + i) * co + o];
                    }
                }
            }
        }
        let dims = vec![co as i64, ci as i64, k as i64, k as i64];
        let w = self.initializer(s.name.clone(), dims, oihw);
        let [begin, end] = same_pads(in_hw, k, c.stride);
        let attrs = vec![
            ints("kernel_shape", &[k as i64, k as i64]),
            ints("strides", &[c.stride as i64, c.stride as i64]),
            ints("pads", &[begin, begin, end, end]),
        ];
        self.node("Conv", &[x, &w], attrs)
    }

    /// Batch norm with the running statistics, then the network's activation.
    fn bn_act(&mut self, x: &str, bn: &BnLayer) -> String {
        let gamma = self.initializer_slice(bn.gamma, self.src.params);
        let beta = self.initializer_slice(bn.beta, self.src.params);
        let r = self.arch.running_specs();
        let (m, v) = (&r[bn.running_mean], &r[bn.running_var]);
        let c = bn.channels as i64;
        let mean = self.initializer(
            m.name.clone(),
            vec![c],
            self.src.running[m.offset..m.offset + m.len()].to_vec(),
        );
        let var = self.initializer(
            v.name.clone(),
            vec![c],
            self.src.running[v.offset..v.offset + v.len()].to_vec(),
        );
        let eps = float("epsilon", self.src.config.bn_eps);
        let y = self.node("BatchNormalization", &[x, &gamma, &beta, &mean, &var], vec![eps]);
        match self.src.config.activation {
            Activation::Relu => self.node("Relu", &[&y], vec![]),
            Activation::Leaky(slope) => self.node("LeakyRelu", &[&y], vec![float("alpha", slope)]),
        }
    }

    /// Renames the graph's last output to `name`.
    fn rename_output(&mut self, from: &str, name: &str) {
        for n in &mut self.nodes {
            for o in &mut n.output {
                if o == from {
                    *o = name.into();
                }
            }
        }
    }

    fn finish(self) -> ModelProto {
        let s = self.arch.image_size as i64;
        let classes = self.src.config.num_classes as i64;
        let batch = || Dimension::param("N");
        let inputs = vec![value_info(
            "image",
            UINT8,
            vec![batch(), Dimension::value(s), Dimension::value(s), Dimension::value(3)],
        )];
        let outputs = vec![value_info("logits", FLOAT, vec![batch(), Dimension::value(classes)])];
        let metadata = [
            ("classes", serde_json::to_string(self.src.classes).unwrap_or_default()),
            ("input_scale", self.src.input_scale.name().to_string()),
            ("input", format!("uint8 RGB [N, {s}, {s}, 3], scaled in the graph")),
            ("network", self.src.config.describe()),
        ];
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "adamatch-wgpu".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: "wideresnet".into(),
                initializer: self.initializers,
                input: inputs,
                output: outputs,
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            metadata_props: metadata
                .into_iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.into(),
                    value: v,
                })
                .collect(),
        }
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: v,
        r#type: ATTR_INT,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: ATTR_INTS,
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f: v,
        r#type: ATTR_FLOAT,
        ..Default::default()
    }
}

fn value_info(name: &str, elem_type: i32, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
    }
}

// The messages of onnx.proto (github.com/onnx/onnx, onnx/onnx.proto) this graph uses, with
// their field numbers; prost writes the wire format.

const FLOAT: i32 = 1; // TensorProto.DataType.FLOAT
const UINT8: i32 = 2; // TensorProto.DataType.UINT8
const ATTR_FLOAT: i32 = 1; // AttributeProto.AttributeType.FLOAT
const ATTR_INT: i32 = 2;
const ATTR_INTS: i32 = 7;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    pub domain: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProtoTensor {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: a fixed size or a named (dynamic) one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

impl Dimension {
    fn value(v: i64) -> Dimension {
        Dimension {
            dim_value: Some(v),
            dim_param: None,
        }
    }

    fn param(name: &str) -> Dimension {
        Dimension {
            dim_value: None,
            dim_param: Some(name.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_pads;

    #[test]
    fn same_padding_puts_the_odd_row_at_the_end_as_tensorflow() {
        assert_eq!(same_pads(32, 3, 1), [1, 1]);
        assert_eq!(same_pads(32, 3, 2), [0, 1]);
        assert_eq!(same_pads(33, 3, 2), [1, 1]);
        assert_eq!(same_pads(32, 1, 2), [0, 0]);
        assert_eq!(same_pads(7, 3, 3), [1, 1]);
    }
}
